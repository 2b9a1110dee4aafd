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

    // The manifest's chunk ids as 128-bit keys, built once per session and process (it was a set of hex
    // strings rebuilt on every 16 MiB batch: 14,000 strings per GiB per request).
    private readonly Lazy<HashSet<UInt128>> _wanted = new(() =>
        Manifest.Chunks.Select(c => System.Buffers.Binary.BinaryPrimitives.ReadUInt128LittleEndian(c.Id)).ToHashSet());

    /// <summary>The whole-image SHA-256 over the chunks this process has received in image order (see <see cref="InOrderHash"/>).</summary>
    public InOrderHash WholeImage { get; } = new();

    /// <summary>Whether a chunk with this SHA-256 is in the manifest.</summary>
    public bool Wants(ReadOnlySpan<byte> chunkId) => _wanted.Value.Contains(System.Buffers.Binary.BinaryPrimitives.ReadUInt128LittleEndian(chunkId));
}

/// <summary>
/// The whole-image SHA-256 of a push, computed while its chunks arrive: a verified chunk that is the next one
/// in image order is hashed from the request's own buffer (and so is each directly following repeat of it), so
/// a push sent in order is hashed once, as it is received, and the commit re-reads nothing. Whatever this
/// process did not see in order (chunks already stored, batches that overtook each other, batches another
/// replica received) the commit reads back from the store from <see cref="Offset"/> on. Guarded by its own
/// lock: concurrent batches of one push only ever advance it.
/// </summary>
public sealed class InOrderHash
{
    private readonly Lock _lock = new();
    private readonly System.Security.Cryptography.IncrementalHash _hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
    private int _next;
    private long _offset;
    private bool _taken;

    /// <summary>Feeds <paramref name="data"/> (whose SHA-256 is <paramref name="id"/>) if it is the next chunk of <paramref name="chunks"/>.</summary>
    public void Offer(IReadOnlyList<ManifestChunk> chunks, ReadOnlySpan<byte> id, ReadOnlySpan<byte> data)
    {
        ArgumentNullException.ThrowIfNull(chunks);
        lock (_lock)
        {
            while (!_taken && _next < chunks.Count && chunks[_next].Id.AsSpan().SequenceEqual(id))
            {
                _hash.AppendData(data);
                _offset += data.Length;
                _next++;
            }
        }
    }

    /// <summary>
    /// Ends the in-order hashing (later offers are ignored) and hands over the hash and how many bytes it has
    /// seen; the caller appends the rest of the image and finishes it. Null when another commit took it.
    /// </summary>
    public (System.Security.Cryptography.IncrementalHash Hash, long Offset)? Take()
    {
        lock (_lock)
        {
            if (_taken)
                return null;
            _taken = true;
            return (_hash, _offset);
        }
    }
}
