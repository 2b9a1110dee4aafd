using System.Buffers.Binary;
using System.Security.Cryptography;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.Coordinator.Storage;

/// <summary>
/// Content-addressed chunks kept in pack objects (<c>packs/&lt;sha256 of the index&gt;</c>, ~16 MiB each, chunks in
/// image order) with a small index beside each (<c>packs/&lt;sha256&gt;.idx</c>). Dedup is decided per
/// 64 KiB chunk; requests are made per pack range, so a pull costs about one request per 8 MiB instead
/// of one per chunk (see docs/decisions/0001-packed-chunks.md for the measurement). The in-memory
/// chunk → (pack, offset) map is rebuilt from the .idx objects at start; a pack becomes visible only
/// once its .idx is written, so an interrupted upload leaves at worst an unindexed pack that GC removes.
/// Between replicas, every pack written is also registered in the state database (<c>packs</c>, numbered in
/// insertion order), so a replica catches up on packs the others wrote with one indexed query
/// (<see cref="CatchUpAsync"/>) instead of listing the store.
/// </summary>
public sealed class ChunkStore(IObjectStore store, State.StateDatabase? db = null) : IDisposable
{
    /// <summary>
    /// How far behind the newest number seen a catch-up looks again: numbers are taken at insert and
    /// committed moments later, so a pack can appear with a number below one already seen. Packs are
    /// registered in one short statement each, so a window of 256 covers any such reordering.
    /// </summary>
    private const long CatchUpWindow = 256;
    private long _seenSeq;
    public const int PackTargetBytes = 16 * 1024 * 1024;
    public const string PacksPrefix = ObjectKeys.PacksPrefix;
    private readonly Lock _lock = new();
    private readonly Dictionary<UInt128, Location> _index = [];
    private readonly Dictionary<string, PackIndex> _packs = new(StringComparer.Ordinal);

    public IObjectStore Objects => store;

    public static string PackKey(string packId) => ObjectKeys.Pack(packId);
    public static string IndexKey(string packId) => ObjectKeys.PackIndex(packId);

    public int PackCount
    {
        get
        {
            lock (_lock)
                return _packs.Count;
        }
    }

    public async Task LoadAsync(CancellationToken cancellationToken)
    {
        // Read the newest registered number before listing, so nothing registered meanwhile is skipped.
        if (db is not null)
            _seenSeq = await db.ReadAsync(c => Dapper.SqlMapper.ExecuteScalarAsync<long?>(c, new Dapper.CommandDefinition(
                "SELECT MAX(seq) FROM packs", cancellationToken: cancellationToken)), cancellationToken) ?? 0;
        await foreach (var key in store.ListAsync(PacksPrefix, cancellationToken))
        {
            if (!key.EndsWith(".idx", StringComparison.Ordinal))
                continue;
            var bytes = await store.GetBytesAsync(key, 64 * 1024 * 1024, cancellationToken);
            if (bytes is null)
                continue;
            var packId = key[PacksPrefix.Length..^4];
            Register(packId, ProtocolSerializer.Deserialize<PackIndex>(bytes, 64 * 1024 * 1024));
        }
        // Packs an earlier version wrote: registered now. Only the missing ones, so a start costs one query, not one insert per pack.
        if (db is not null)
        {
            var registered = (await db.ReadAsync(c => Dapper.SqlMapper.QueryAsync<string>(c, new Dapper.CommandDefinition(
                "SELECT pack_id FROM packs", cancellationToken: cancellationToken)), cancellationToken)).ToHashSet(StringComparer.Ordinal);
            var missing = SnapshotPacks().Keys.Where(id => !registered.Contains(id)).ToList();
            if (missing.Count > 0)
                await db.WriteAsync(async (c, t) =>
                {
                    foreach (var id in missing)
                        await RegisterRowAsync(c, t, id, cancellationToken);
                }, cancellationToken);
        }
    }

    private static Task<int> RegisterRowAsync(System.Data.Common.DbConnection c, System.Data.Common.DbTransaction t, string packId, CancellationToken cancellationToken) =>
        Dapper.SqlMapper.ExecuteAsync(c, new Dapper.CommandDefinition(
            "INSERT INTO packs (pack_id, created_at_ms) VALUES (@packId, @now) ON CONFLICT (pack_id) DO NOTHING",
            new { packId, now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() }, t, cancellationToken: cancellationToken));

    /// <summary>
    /// Loads the packs other replicas registered since this one last looked: one indexed query, then the
    /// .idx of each new pack. Cheap enough to call before every "which chunks are missing" answer.
    /// </summary>
    public async Task CatchUpAsync(CancellationToken cancellationToken)
    {
        if (db is null)
            return;
        var since = Interlocked.Read(ref _seenSeq) - CatchUpWindow;
        var rows = await db.ReadAsync(c => Dapper.SqlMapper.QueryAsync<(long Seq, string PackId)>(c, new Dapper.CommandDefinition(
            "SELECT seq, pack_id FROM packs WHERE seq > @since ORDER BY seq", new { since }, cancellationToken: cancellationToken)), cancellationToken);
        foreach (var (seq, packId) in rows)
        {
            bool known;
            lock (_lock)
                known = _packs.ContainsKey(packId);
            if (!known && await store.GetBytesAsync(IndexKey(packId), 64 * 1024 * 1024, cancellationToken) is { } bytes)
                Register(packId, ProtocolSerializer.Deserialize<PackIndex>(bytes, 64 * 1024 * 1024));
            if (seq > Interlocked.Read(ref _seenSeq))
                Interlocked.Exchange(ref _seenSeq, seq);
        }
    }

    private readonly SemaphoreSlim _refresh = new(1, 1);

    public void Dispose() => _refresh.Dispose();

    /// <summary>
    /// Brings the index up to what the store holds now: packs another replica wrote since this one loaded
    /// are added, packs another replica's GC deleted are dropped. The store's listing is the truth; this is
    /// called when a committed image names a chunk the index lacks, or a pack it points at has gone.
    /// </summary>
    /// <returns>Whether anything changed.</returns>
    public async Task<bool> RefreshAsync(CancellationToken cancellationToken)
    {
        await _refresh.WaitAsync(cancellationToken);
        try
        {
            var listed = new HashSet<string>(StringComparer.Ordinal);
            var changed = false;
            await foreach (var key in store.ListAsync(PacksPrefix, cancellationToken))
            {
                if (!key.EndsWith(".idx", StringComparison.Ordinal))
                    continue;
                var packId = key[PacksPrefix.Length..^4];
                listed.Add(packId);
                bool known;
                lock (_lock)
                    known = _packs.ContainsKey(packId);
                if (known || await store.GetBytesAsync(key, 64 * 1024 * 1024, cancellationToken) is not { } bytes)
                    continue;
                Register(packId, ProtocolSerializer.Deserialize<PackIndex>(bytes, 64 * 1024 * 1024));
                changed = true;
            }
            foreach (var gone in SnapshotPacks().Keys.Where(id => !listed.Contains(id)))
            {
                Forget(gone);
                changed = true;
            }
            return changed;
        }
        finally
        {
            _refresh.Release();
        }
    }

    /// <summary>Like <see cref="TryLocate"/>, refreshing the index once (<see cref="RefreshAsync"/>) when the chunk is not in it.</summary>
    public async ValueTask<Location?> LocateAsync(byte[] chunkId, CancellationToken cancellationToken)
    {
        if (TryLocate(chunkId, out var location))
            return location;
        await CatchUpAsync(cancellationToken);
        if (TryLocate(chunkId, out location))
            return location;
        await RefreshAsync(cancellationToken); // the last resort: what the store itself lists
        return TryLocate(chunkId, out location) ? location : null;
    }

    public bool Contains(ReadOnlySpan<byte> chunkId)
    {
        lock (_lock)
            return _index.ContainsKey(Key(chunkId));
    }

    public bool TryLocate(ReadOnlySpan<byte> chunkId, out Location location)
    {
        lock (_lock)
            return _index.TryGetValue(Key(chunkId), out location);
    }

    public IReadOnlyDictionary<string, PackIndex> SnapshotPacks()
    {
        lock (_lock)
            return new Dictionary<string, PackIndex>(_packs, StringComparer.Ordinal);
    }

    /// <summary>Stores one pack (data, then its index) and makes its chunks findable.</summary>
    public async Task<string> WritePackAsync(ReadOnlyMemory<byte> data, PackIndex index, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(index);
        // The index lists the SHA-256 of every chunk at its offset, so its own hash names the pack's
        // content as well as hashing the data would, without another pass over 16 MiB.
        var indexBytes = ProtocolSerializer.Serialize(index);
        var packId = Convert.ToHexStringLower(SHA256.HashData(indexBytes));
        await store.PutAsync(PackKey(packId), data, cancellationToken);
        await store.PutAsync(IndexKey(packId), indexBytes, cancellationToken);
        Register(packId, index);
        if (db is not null)
            await db.WriteAsync((c, t) => RegisterRowAsync(c, t, packId, cancellationToken), cancellationToken);
        return packId;
    }

    /// <summary>Forgets a pack and deletes it: index first, so a crash leaves only an unindexed pack.</summary>
    public async Task DeletePackAsync(string packId, CancellationToken cancellationToken)
    {
        Forget(packId);
        if (db is not null)
            await db.WriteAsync((c, t) => Dapper.SqlMapper.ExecuteAsync(c, new Dapper.CommandDefinition(
                "DELETE FROM packs WHERE pack_id = @packId", new { packId }, t, cancellationToken: cancellationToken)), cancellationToken);
        await store.DeleteAsync(IndexKey(packId), cancellationToken);
        await store.DeleteAsync(PackKey(packId), cancellationToken);
    }

    private void Forget(string packId)
    {
        lock (_lock)
        {
            if (_packs.Remove(packId, out var index))
            {
                foreach (var entry in index.Entries)
                {
                    var key = Key(entry.Id);
                    if (_index.TryGetValue(key, out var location) && location.PackId == packId)
                        _index.Remove(key);
                }
                // A chunk may live in another pack too (two concurrent uploads of the same new chunk).
                foreach (var (otherId, other) in _packs)
                    foreach (var entry in other.Entries)
                        _index.TryAdd(Key(entry.Id), new Location(otherId, entry.Offset, entry.Length));
            }
        }
    }

    private void Register(string packId, PackIndex index)
    {
        lock (_lock)
        {
            _packs[packId] = index;
            foreach (var entry in index.Entries)
                _index.TryAdd(Key(entry.Id), new Location(packId, entry.Offset, entry.Length));
        }
    }

    // 128 bits of a SHA-256 are collision-free for any catalog this index can hold in memory.
    private static UInt128 Key(ReadOnlySpan<byte> id) => BinaryPrimitives.ReadUInt128LittleEndian(id);

    public readonly record struct Location(string PackId, long Offset, int Length);
}
