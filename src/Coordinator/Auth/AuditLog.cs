using System.Security.Claims;
using System.Text.Json;
using MsdFleet.Coordinator.Storage;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// Who uploaded, deleted, mounted, ejected, changed limits, tokens or agent credentials, and when —
/// one immutable object per event under <c>audit/</c>, in the same durable store as everything else, so
/// it survives restarts and is shared by replicas. Readable by admins through <c>GET /api/v1/audit</c>.
/// </summary>
public sealed class AuditLog(IObjectStore store, TimeProvider time)
{
    private const string Prefix = "audit/";
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public async Task RecordAsync(ClaimsPrincipal actor, string action, string target, string? detail, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(actor);
        var at = time.GetUtcNow();
        var entry = new AuditEntry(at, actor.Identity?.Name ?? "unknown", actor.FindFirstValue(ClaimTypes.Role) ?? "unknown", action, target, detail);
        // Sortable key: time first, then a random suffix so concurrent events never collide.
        var key = $"{Prefix}{at.UtcTicks:D19}-{Guid.NewGuid():N}";
        await store.PutAsync(key, JsonSerializer.SerializeToUtf8Bytes(entry, Json), cancellationToken);
        await store.FlushAsync(cancellationToken);
    }

    public async Task<IReadOnlyList<AuditEntry>> ReadAsync(int limit, CancellationToken cancellationToken)
    {
        var keys = new List<string>();
        await foreach (var key in store.ListAsync(Prefix, cancellationToken))
            keys.Add(key);
        var entries = new List<AuditEntry>();
        foreach (var key in keys.Order(StringComparer.Ordinal).TakeLast(limit))
        {
            if (await store.GetBytesAsync(key, 64 * 1024, cancellationToken) is { } bytes)
                entries.Add(JsonSerializer.Deserialize<AuditEntry>(bytes, Json)!);
        }
        return entries;
    }
}

public sealed record AuditEntry(DateTimeOffset At, string Actor, string Role, string Action, string Target, string? Detail);
