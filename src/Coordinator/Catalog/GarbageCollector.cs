using System.Buffers.Binary;
using System.Security.Cryptography;
using MsdFleet.Coordinator.Fleet;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// Frees what no image needs any more. Live = chunks of manifests named by the catalog, by any desired
/// state, or by an open push session. Under the exclusive <see cref="StoreGate"/> lease (no upload is
/// deduplicating against the store meanwhile) it deletes unreferenced manifests and packs, and repacks
/// packs that are partly dead: live chunks are verified, written to a new pack, and only then is the old
/// pack deleted — a crash at any point leaves every live chunk in at least one indexed pack.
/// </summary>
public sealed partial class GarbageCollector(
    ChunkStore chunks, ImageCatalog catalog, DesiredStateStore desired, PushSessionStore sessions, StoreGate gate,
    State.LeaderLease leader, Observability.CoordinatorMetrics metrics, ILogger<GarbageCollector> logger)
{
    public async Task<GcResult> CollectAsync(CancellationToken cancellationToken)
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        var result = await CollectOnceAsync(cancellationToken);
        metrics.GcDuration.Record(System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds);
        metrics.GcFreed.Add(Math.Max(0, result.BytesFreed));
        return result;
    }

    private async Task<GcResult> CollectOnceAsync(CancellationToken cancellationToken)
    {
        await using var lease = await gate.EnterExclusiveAsync(cancellationToken);
        var store = chunks.Objects;
        await chunks.RefreshAsync(cancellationToken); // packs other replicas wrote since this one started
        var liveDigests = new HashSet<string>(StringComparer.Ordinal);
        // Roots from the database, not from this replica's cache: another replica may have just assigned one.
        liveDigests.UnionWith(await catalog.DigestsAsync(cancellationToken));
        liveDigests.UnionWith(await desired.DigestsInUseAsync(cancellationToken));
        var live = new HashSet<UInt128>();
        foreach (var digest in liveDigests)
        {
            var manifest = await catalog.GetManifestAsync(ImageDigest.Parse(digest), cancellationToken);
            foreach (var chunk in manifest?.Chunks ?? [])
                live.Add(Key(chunk.Id));
        }
        foreach (var manifest in await sessions.OpenManifestsAsync(cancellationToken))
        {
            liveDigests.Add(ImageDigest.Compute(manifest.ToBytes()).ToString());
            foreach (var chunk in manifest.Chunks)
                live.Add(Key(chunk.Id));
        }

        var result = new GcResult();
        var manifestKeys = new List<string>();
        await foreach (var key in store.ListAsync(ObjectKeys.ManifestsPrefix, cancellationToken))
            manifestKeys.Add(key);
        foreach (var key in manifestKeys)
        {
            if (!liveDigests.Contains(ImageDigest.Prefix + key[ObjectKeys.ManifestsPrefix.Length..]))
            {
                await leader.EnsureLeaderAsync(cancellationToken); // before every destructive step
                await store.DeleteAsync(key, cancellationToken);
                result.ManifestsDeleted++;
            }
        }

        var packs = chunks.SnapshotPacks();
        foreach (var (packId, index) in packs)
        {
            var keep = index.Entries.Where(e => live.Contains(Key(e.Id)) && chunks.TryLocate(e.Id, out var at) && at.PackId == packId).ToList();
            if (keep.Count == index.Entries.Count)
                continue;
            await leader.EnsureLeaderAsync(cancellationToken);
            if (keep.Count > 0)
            {
                var repacked = await RepackAsync(packId, keep, cancellationToken);
                result.PacksRepacked++;
                result.BytesFreed -= repacked;
            }
            result.BytesFreed += index.Entries.Sum(e => (long)e.Length);
            result.ChunksDeleted += index.Entries.Count - keep.Count;
            await chunks.DeletePackAsync(packId, cancellationToken);
            result.PacksDeleted++;
        }

        // Pack data without an index: left by a crash between the two puts; never referenced.
        var packKeys = new List<string>();
        await foreach (var key in store.ListAsync(ChunkStore.PacksPrefix, cancellationToken))
            packKeys.Add(key);
        var indexed = packKeys.Where(k => k.EndsWith(".idx", StringComparison.Ordinal)).Select(k => k[..^4]).ToHashSet(StringComparer.Ordinal);
        foreach (var key in packKeys.Where(k => !k.EndsWith(".idx", StringComparison.Ordinal) && !indexed.Contains(k)))
        {
            await leader.EnsureLeaderAsync(cancellationToken);
            await store.DeleteAsync(key, cancellationToken);
            result.PacksDeleted++;
        }
        await store.FlushAsync(cancellationToken);
        Log.Collected(logger, result.ManifestsDeleted, result.PacksDeleted, result.PacksRepacked, result.BytesFreed);
        return result;
    }

    private async Task<long> RepackAsync(string packId, List<PackEntry> keep, CancellationToken cancellationToken)
    {
        var buffer = new byte[keep.Sum(e => (long)e.Length)];
        var entries = new List<PackEntry>();
        var at = 0;
        foreach (var entry in keep.OrderBy(e => e.Offset))
        {
            await using (var stream = await chunks.Objects.OpenReadAsync(ChunkStore.PackKey(packId), entry.Offset, cancellationToken)
                ?? throw new InvalidDataException($"Pack {packId} disappeared during GC."))
                await stream.ReadExactlyAsync(buffer.AsMemory(at, entry.Length), cancellationToken);
            if (!SHA256.HashData(buffer.AsSpan(at, entry.Length)).AsSpan().SequenceEqual(entry.Id))
                throw new InvalidDataException($"Chunk {Convert.ToHexStringLower(entry.Id)} in pack {packId} is corrupt; GC stopped without deleting it.");
            entries.Add(new PackEntry { Id = entry.Id, Offset = at, Length = entry.Length });
            at += entry.Length;
        }
        await chunks.WritePackAsync(buffer, new PackIndex { Entries = entries }, cancellationToken);
        await chunks.Objects.FlushAsync(cancellationToken);
        return buffer.Length;
    }

    private static UInt128 Key(byte[] id) => BinaryPrimitives.ReadUInt128LittleEndian(id);

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "GC deleted {Manifests} manifests and {Packs} packs, repacked {Repacked}; {Bytes} bytes freed")]
        public static partial void Collected(ILogger logger, int manifests, int packs, int repacked, long bytes);
    }
}

public sealed class GcResult
{
    public int ManifestsDeleted { get; set; }
    public int PacksDeleted { get; set; }
    public int PacksRepacked { get; set; }
    public int ChunksDeleted { get; set; }
    public long BytesFreed { get; set; }
}
