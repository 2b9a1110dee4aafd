using System.Text.Json;
using MsdFleet.Coordinator.Storage;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// One-time enrollment tokens (<c>msde_…</c>), stored only as hashes under <c>auth/enrollments/</c>.
/// A token names the agent id it enrolls, expires, and is deleted by the exchange that uses it.
/// </summary>
public sealed class EnrollmentStore(IObjectStore store, TimeProvider time) : IDisposable
{
    public const string TokenPrefix = "msde_";
    private const string Prefix = "auth/enrollments/";
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly SemaphoreSlim _consume = new(1, 1);

    public async Task<(string Token, EnrollmentRecord Record)> CreateAsync(string agentId, TimeSpan lifetime, string createdBy, CancellationToken cancellationToken)
    {
        var token = SecretHash.NewSecret(TokenPrefix);
        var hash = SecretHash.HashHex(token);
        var now = time.GetUtcNow();
        var record = new EnrollmentRecord(hash[..16], agentId, now, now + lifetime, createdBy);
        await store.PutAsync(Prefix + hash, JsonSerializer.SerializeToUtf8Bytes(record, Json), cancellationToken);
        await store.FlushAsync(cancellationToken);
        return (token, record);
    }

    /// <summary>The token's record if it is known and unexpired (does not consume it).</summary>
    public async Task<EnrollmentRecord?> FindAsync(string token, CancellationToken cancellationToken)
    {
        var bytes = await store.GetBytesAsync(Prefix + SecretHash.HashHex(token), 64 * 1024, cancellationToken);
        if (bytes is null)
            return null;
        var record = JsonSerializer.Deserialize<EnrollmentRecord>(bytes, Json)!;
        return record.ExpiresAt <= time.GetUtcNow() ? null : record;
    }

    /// <summary>Deletes the token and returns its record; null if it was already used, revoked or expired.</summary>
    public async Task<EnrollmentRecord?> ConsumeAsync(string token, CancellationToken cancellationToken)
    {
        await _consume.WaitAsync(cancellationToken);
        try
        {
            var record = await FindAsync(token, cancellationToken);
            if (record is null)
                return null;
            await store.DeleteAsync(Prefix + SecretHash.HashHex(token), cancellationToken);
            await store.FlushAsync(cancellationToken);
            return record;
        }
        finally
        {
            _consume.Release();
        }
    }

    public async Task<IReadOnlyList<EnrollmentRecord>> ListAsync(CancellationToken cancellationToken)
    {
        var records = new List<EnrollmentRecord>();
        await foreach (var key in store.ListAsync(Prefix, cancellationToken))
        {
            if (await store.GetBytesAsync(key, 64 * 1024, cancellationToken) is { } bytes)
                records.Add(JsonSerializer.Deserialize<EnrollmentRecord>(bytes, Json)!);
        }
        return records.OrderBy(r => r.CreatedAt).ToList();
    }

    public async Task<bool> RevokeAsync(string id, CancellationToken cancellationToken)
    {
        if (id.Length != 16)
            return false;
        await foreach (var key in store.ListAsync(Prefix, cancellationToken))
        {
            if (!key[Prefix.Length..].StartsWith(id, StringComparison.Ordinal))
                continue;
            await store.DeleteAsync(key, cancellationToken);
            await store.FlushAsync(cancellationToken);
            return true;
        }
        return false;
    }

    /// <summary>Deletes tokens that expired before <paramref name="now"/>; returns how many.</summary>
    public async Task<int> PruneAsync(DateTimeOffset now, CancellationToken cancellationToken)
    {
        var removed = 0;
        foreach (var record in await ListAsync(cancellationToken))
        {
            if (record.ExpiresAt <= now && await RevokeAsync(record.Id, cancellationToken))
                removed++;
        }
        return removed;
    }

    public void Dispose() => _consume.Dispose();
}

public sealed record EnrollmentRecord(string Id, string AgentId, DateTimeOffset CreatedAt, DateTimeOffset ExpiresAt, string CreatedBy);
