using System.Collections.Concurrent;
using System.Text.Json;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// Open client-side pushes: the client chunks locally, announces its manifest, sends the chunks the
/// store lacks, then commits. Sessions are stored (<c>uploads/&lt;id&gt;</c>) so a push survives a
/// Coordinator restart, and their manifests keep their chunks alive against GC until commit or expiry.
/// </summary>
public sealed class PushSessionStore(IObjectStore store, TimeProvider time)
{
    public static readonly TimeSpan Lifetime = TimeSpan.FromHours(24);
    private const string Prefix = "uploads/";
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly ConcurrentDictionary<string, PushSession> _sessions = new(StringComparer.Ordinal);

    public async Task LoadAsync(CancellationToken cancellationToken)
    {
        await foreach (var key in store.ListAsync(Prefix, cancellationToken))
        {
            var bytes = await store.GetBytesAsync(key, ImageManifest.MaxEncodedBytes * 2, cancellationToken);
            if (bytes is null)
                continue;
            var record = JsonSerializer.Deserialize<PushSessionRecord>(bytes, Json)!;
            if (record.ExpiresAt < time.GetUtcNow())
            {
                await store.DeleteAsync(key, cancellationToken);
                continue;
            }
            _sessions[record.Id] = new PushSession(record.Id, ImageManifest.Parse(record.Manifest), record.ExpiresAt) { Owner = record.Owner };
        }
    }

    /// <param name="owner">The agent that opened the session (a snapshot), or null for people; an agent may use only its own sessions.</param>
    public async Task<PushSession> CreateAsync(ImageManifest manifest, string? owner, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        var session = new PushSession(Guid.NewGuid().ToString("N"), manifest, time.GetUtcNow() + Lifetime) { Owner = owner };
        var record = new PushSessionRecord(session.Id, manifest.ToBytes(), session.ExpiresAt) { Owner = owner };
        await store.PutAsync(Prefix + session.Id, JsonSerializer.SerializeToUtf8Bytes(record, Json), cancellationToken);
        await store.FlushAsync(cancellationToken);
        _sessions[session.Id] = session;
        return session;
    }

    public PushSession? Get(string id) =>
        _sessions.TryGetValue(id, out var session) && session.ExpiresAt > time.GetUtcNow() ? session : null;

    public async Task RemoveAsync(string id, CancellationToken cancellationToken)
    {
        _sessions.TryRemove(id, out _);
        await store.DeleteAsync(Prefix + id, cancellationToken);
    }

    public IEnumerable<ImageManifest> OpenManifests() =>
        _sessions.Values.Where(s => s.ExpiresAt > time.GetUtcNow()).Select(s => s.Manifest);

    private sealed record PushSessionRecord(string Id, byte[] Manifest, DateTimeOffset ExpiresAt)
    {
        public string? Owner { get; init; }
    }
}

public sealed record PushSession(string Id, ImageManifest Manifest, DateTimeOffset ExpiresAt)
{
    /// <summary>The agent that opened it for a snapshot, or null when a person did.</summary>
    public string? Owner { get; init; }

    public ImageDigest Digest { get; } = ImageDigest.Compute(Manifest.ToBytes());
}
