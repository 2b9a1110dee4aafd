using System.Collections.Concurrent;
using Dapper;
using MsdFleet.Coordinator.State;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// Open pushes (<c>push_sessions</c>: the client's manifest, who opened it, when it expires), so a push
/// started on one replica continues on any other, and after a restart. Every use asks the database
/// whether the session is still open (a commit or abort elsewhere ends it at once); the parsed manifest
/// is kept per process, since a session's manifest never changes.
/// </summary>
public sealed class PushSessionStore(StateDatabase db, TimeProvider time)
{
    public static readonly TimeSpan Lifetime = TimeSpan.FromHours(24);
    private readonly ConcurrentDictionary<string, PushSession> _parsed = new(StringComparer.Ordinal);

    public async Task<PushSession> CreateAsync(ImageManifest manifest, string? owner, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        var session = new PushSession(Guid.NewGuid().ToString("N"), manifest, time.GetUtcNow() + Lifetime) { Owner = owner };
        await db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition(
            "INSERT INTO push_sessions (id, manifest, owner, expires_at_ms) VALUES (@id, @manifest, @owner, @expires)",
            new { id = session.Id, manifest = manifest.ToBytes(), owner, expires = session.ExpiresAt.ToUnixTimeMilliseconds() }, t, cancellationToken: cancellationToken)),
            cancellationToken);
        _parsed[session.Id] = session;
        return session;
    }

    /// <summary>The open, unexpired session, or null.</summary>
    public async Task<PushSession?> GetAsync(string id, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().ToUnixTimeMilliseconds();
        var cached = _parsed.TryGetValue(id, out var parsed);
        var row = await db.ReadAsync(c => c.QuerySingleOrDefaultAsync<(long ExpiresAt, string? Owner, byte[]? Manifest)?>(new CommandDefinition(
            cached ? "SELECT expires_at_ms, owner, NULL FROM push_sessions WHERE id = @id" : "SELECT expires_at_ms, owner, manifest FROM push_sessions WHERE id = @id",
            new { id }, cancellationToken: cancellationToken)), cancellationToken);
        if (row is not { } r || r.ExpiresAt <= now)
        {
            _parsed.TryRemove(id, out _);
            return null;
        }
        if (cached)
            return parsed;
        var session = new PushSession(id, ImageManifest.Parse(r.Manifest!), DateTimeOffset.FromUnixTimeMilliseconds(r.ExpiresAt)) { Owner = r.Owner };
        _parsed[id] = session;
        return session;
    }

    public async Task RemoveAsync(string id, CancellationToken cancellationToken)
    {
        _parsed.TryRemove(id, out _);
        await db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition("DELETE FROM push_sessions WHERE id = @id", new { id }, t, cancellationToken: cancellationToken)),
            cancellationToken);
    }

    /// <summary>The manifests of every open push on any replica (GC keeps their chunks); expired sessions are deleted on the way.</summary>
    public async Task<IReadOnlyList<ImageManifest>> OpenManifestsAsync(CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().ToUnixTimeMilliseconds();
        await db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition("DELETE FROM push_sessions WHERE expires_at_ms <= @now", new { now }, t,
            cancellationToken: cancellationToken)), cancellationToken);
        var rows = await db.ReadAsync(c => c.QueryAsync<byte[]>(new CommandDefinition(
            "SELECT manifest FROM push_sessions WHERE expires_at_ms > @now", new { now }, cancellationToken: cancellationToken)), cancellationToken);
        return rows.Select(b => ImageManifest.Parse(b)).ToList();
    }
}

public sealed record PushSession(string Id, ImageManifest Manifest, DateTimeOffset ExpiresAt)
{
    public string? Owner { get; init; }

    public ImageDigest Digest { get; } = ImageDigest.Compute(Manifest.ToBytes());
}
