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

    /// <summary>
    /// A streamed push: no manifest yet; the client declares it in parts (<see cref="AddPartAsync"/>) while it
    /// cuts, sends each part's missing chunks, and the commit assembles the manifest from the parts in order.
    /// </summary>
    public async Task<PushSession> CreateStreamingAsync(string? owner, CancellationToken cancellationToken)
    {
        var session = new PushSession(Guid.NewGuid().ToString("N"), PushSession.EmptyManifest, time.GetUtcNow() + Lifetime) { Owner = owner, Streaming = true };
        await db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition(
            "INSERT INTO push_sessions (id, manifest, owner, expires_at_ms, streaming) VALUES (@id, @manifest, @owner, @expires, 1)",
            new { id = session.Id, manifest = session.Manifest.ToBytes(), owner, expires = session.ExpiresAt.ToUnixTimeMilliseconds() }, t, cancellationToken: cancellationToken)),
            cancellationToken);
        _parsed[session.Id] = session;
        return session;
    }

    /// <summary>
    /// Records part <paramref name="part"/> of a streamed push's manifest. Idempotent: the same bytes again (a retry)
    /// are accepted; other bytes under a number already recorded are refused, so a part never changes once a client
    /// may have sent chunks for it. The primary key (session, part) makes two replicas racing on one part agree.
    /// </summary>
    /// <returns>False when a different part with that number exists.</returns>
    public async Task<bool> AddPartAsync(PushSession session, int part, byte[] entries, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(session);
        var stored = await db.WriteAsync(async (c, t) =>
        {
            await c.ExecuteAsync(new CommandDefinition(
                "INSERT INTO push_parts (session_id, part, entries) VALUES (@id, @part, @entries) ON CONFLICT (session_id, part) DO NOTHING",
                new { id = session.Id, part, entries }, t, cancellationToken: cancellationToken));
            return await c.QuerySingleAsync<byte[]>(new CommandDefinition(
                "SELECT entries FROM push_parts WHERE session_id = @id AND part = @part", new { id = session.Id, part }, t, cancellationToken: cancellationToken));
        }, cancellationToken);
        if (!stored.AsSpan().SequenceEqual(entries))
            return false;
        session.AddPart(part, PushSession.ParsePart(entries));
        return true;
    }

    /// <summary>Loads the parts of a streamed push that this process has not seen (another replica recorded them).</summary>
    public async Task RefreshPartsAsync(PushSession session, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(session);
        if (!session.Streaming)
            return;
        var rows = await db.ReadAsync(c => c.QueryAsync<(long Part, byte[] Entries)>(new CommandDefinition(
            "SELECT part, entries FROM push_parts WHERE session_id = @id", new { id = session.Id }, cancellationToken: cancellationToken)), cancellationToken);
        foreach (var (part, entries) in rows)
            session.AddPart((int)part, PushSession.ParsePart(entries));
    }

    /// <summary>The open, unexpired session, or null.</summary>
    public async Task<PushSession?> GetAsync(string id, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().ToUnixTimeMilliseconds();
        var cached = _parsed.TryGetValue(id, out var parsed);
        var row = await db.ReadAsync(c => c.QuerySingleOrDefaultAsync<(long ExpiresAt, string? Owner, byte[]? Manifest, long Streaming)?>(new CommandDefinition(
            cached ? "SELECT expires_at_ms, owner, NULL, streaming FROM push_sessions WHERE id = @id" : "SELECT expires_at_ms, owner, manifest, streaming FROM push_sessions WHERE id = @id",
            new { id }, cancellationToken: cancellationToken)), cancellationToken);
        if (row is not { } r || r.ExpiresAt <= now)
        {
            _parsed.TryRemove(id, out _);
            return null;
        }
        if (cached)
            return parsed;
        var session = new PushSession(id, ImageManifest.Parse(r.Manifest!), DateTimeOffset.FromUnixTimeMilliseconds(r.ExpiresAt)) { Owner = r.Owner, Streaming = r.Streaming != 0 };
        await RefreshPartsAsync(session, cancellationToken);
        _parsed[id] = session;
        return session;
    }

    public async Task RemoveAsync(string id, CancellationToken cancellationToken)
    {
        _parsed.TryRemove(id, out _);
        await db.WriteAsync(async (c, t) =>
        {
            await c.ExecuteAsync(new CommandDefinition("DELETE FROM push_parts WHERE session_id = @id", new { id }, t, cancellationToken: cancellationToken));
            return await c.ExecuteAsync(new CommandDefinition("DELETE FROM push_sessions WHERE id = @id", new { id }, t, cancellationToken: cancellationToken));
        }, cancellationToken);
    }

    /// <summary>The manifests of every open push on any replica (GC keeps their chunks); expired sessions are deleted on the way.</summary>
    public async Task<IReadOnlyList<ImageManifest>> OpenManifestsAsync(CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().ToUnixTimeMilliseconds();
        await db.WriteAsync(async (c, t) =>
        {
            await c.ExecuteAsync(new CommandDefinition(
                "DELETE FROM push_parts WHERE session_id IN (SELECT id FROM push_sessions WHERE expires_at_ms <= @now)", new { now }, t, cancellationToken: cancellationToken));
            return await c.ExecuteAsync(new CommandDefinition("DELETE FROM push_sessions WHERE expires_at_ms <= @now", new { now }, t, cancellationToken: cancellationToken));
        }, cancellationToken);
        var rows = await db.ReadAsync(c => c.QueryAsync<byte[]>(new CommandDefinition(
            "SELECT manifest FROM push_sessions WHERE expires_at_ms > @now", new { now }, cancellationToken: cancellationToken)), cancellationToken);
        var manifests = rows.Select(b => ImageManifest.Parse(b)).ToList();
        // A streamed push's chunks are live from the moment their part is declared (it may be sent before the commit).
        var parts = await db.ReadAsync(c => c.QueryAsync<byte[]>(new CommandDefinition(
            "SELECT p.entries FROM push_parts p JOIN push_sessions s ON s.id = p.session_id WHERE s.expires_at_ms > @now", new { now },
            cancellationToken: cancellationToken)), cancellationToken);
        foreach (var entries in parts)
        {
            var chunks = PushSession.ParsePart(entries);
            manifests.Add(PushSession.EmptyManifest with { Size = chunks.Sum(c => (long)c.Length), Chunks = chunks });
        }
        return manifests;
    }
}

public sealed record PushSession(string Id, ImageManifest Manifest, DateTimeOffset ExpiresAt)
{
    /// <summary>What a streamed push's row holds until its commit: no chunks, size 0, SHA-256 unknown (zeros).</summary>
    public static ImageManifest EmptyManifest { get; } = new() { Size = 0, Sha256 = new byte[32], Chunker = Protocol.Chunking.ChunkerParameters.Default, Chunks = [] };

    /// <summary>Bytes per entry of a streamed part: the chunk's SHA-256, then its length (4 bytes, big-endian).</summary>
    public const int PartEntryBytes = 36;

    /// <summary>Most chunks in one part (4,096 × 256 KiB = 1 GiB at the largest chunk size).</summary>
    public const int MaxPartEntries = 4096;

    public string? Owner { get; init; }

    /// <summary>A streamed push (msdctl): the manifest arrives in numbered parts.</summary>
    public bool Streaming { get; init; }

    public ImageDigest Digest { get; } = ImageDigest.Compute(Manifest.ToBytes());

    /// <summary>The whole-image SHA-256 over the chunks this process has received in image order (see <see cref="InOrderHash"/>).</summary>
    public InOrderHash WholeImage { get; } = new();

    // A streamed push's parts as this process knows them, and the chunks of parts 0..k-1 (the longest run without a gap).
    private readonly Lock _partsLock = new();
    private readonly SortedDictionary<int, IReadOnlyList<ManifestChunk>> _parts = [];
    private readonly HashSet<UInt128> _partIds = [];
    private IReadOnlyList<ManifestChunk> _ordered = [];

    /// <summary>The chunks in image order: the manifest's, or for a streamed push those of its parts without a gap from part 0.</summary>
    public IReadOnlyList<ManifestChunk> OrderedChunks
    {
        get
        {
            if (!Streaming)
                return Manifest.Chunks;
            lock (_partsLock)
                return _ordered;
        }
    }

    /// <summary>The numbers of the parts this process knows, in order.</summary>
    public IReadOnlyList<int> PartNumbers
    {
        get
        {
            lock (_partsLock)
                return [.. _parts.Keys];
        }
    }

    /// <summary>Every chunk of every part this process knows, in part order (gaps and all).</summary>
    public IReadOnlyList<ManifestChunk> DeclaredChunks
    {
        get
        {
            lock (_partsLock)
                return [.. _parts.Values.SelectMany(p => p)];
        }
    }

    /// <summary>Parts 0..count-1, or null when one of them is not known.</summary>
    public IReadOnlyList<ManifestChunk>? ChunksOfParts(int count)
    {
        lock (_partsLock)
        {
            var chunks = new List<ManifestChunk>();
            for (var i = 0; i < count; i++)
            {
                if (!_parts.TryGetValue(i, out var part))
                    return null;
                chunks.AddRange(part);
            }
            return chunks;
        }
    }

    internal void AddPart(int number, IReadOnlyList<ManifestChunk> chunks)
    {
        lock (_partsLock)
        {
            if (!_parts.TryAdd(number, chunks))
                return;
            foreach (var chunk in chunks)
                _partIds.Add(Key(chunk.Id));
            var ordered = new List<ManifestChunk>();
            for (var i = 0; _parts.TryGetValue(i, out var part); i++)
                ordered.AddRange(part);
            _ordered = ordered;
        }
    }

    /// <summary>Parses a part's entries; throws <see cref="ProtocolFormatException"/> on a malformed one.</summary>
    public static IReadOnlyList<ManifestChunk> ParsePart(ReadOnlySpan<byte> entries)
    {
        if (entries.Length == 0 || entries.Length % PartEntryBytes != 0)
            throw new Protocol.ProtocolFormatException($"A part is a whole number of {PartEntryBytes}-byte entries (SHA-256, then a 4-byte big-endian length), at least one.");
        var count = entries.Length / PartEntryBytes;
        if (count > MaxPartEntries)
            throw new Protocol.ProtocolFormatException($"A part holds at most {MaxPartEntries} chunks, not {count}.");
        var max = Protocol.Chunking.ChunkerParameters.Default.MaxSize;
        var chunks = new ManifestChunk[count];
        for (var i = 0; i < count; i++)
        {
            var entry = entries.Slice(i * PartEntryBytes, PartEntryBytes);
            var length = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(entry[32..]);
            if (length <= 0 || length > max)
                throw new Protocol.ProtocolFormatException($"Entry {i} has length {length}, outside 1..{max}.");
            chunks[i] = new ManifestChunk { Id = entry[..32].ToArray(), Length = length };
        }
        return chunks;
    }

    // The manifest's chunk ids as 128-bit keys, built once per session and process (it was a set of hex
    // strings rebuilt on every 16 MiB batch: 14,000 strings per GiB per request).
    private readonly Lazy<HashSet<UInt128>> _wanted = new(() => Manifest.Chunks.Select(c => Key(c.Id)).ToHashSet());

    /// <summary>Whether a chunk with this SHA-256 is in the manifest (or, streamed, in a part this process knows).</summary>
    public bool Wants(ReadOnlySpan<byte> chunkId)
    {
        if (!Streaming)
            return _wanted.Value.Contains(Key(chunkId));
        lock (_partsLock)
            return _partIds.Contains(Key(chunkId));
    }

    private static UInt128 Key(ReadOnlySpan<byte> id) => System.Buffers.Binary.BinaryPrimitives.ReadUInt128LittleEndian(id);
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
