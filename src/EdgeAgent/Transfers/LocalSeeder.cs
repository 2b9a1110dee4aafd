using System.Buffers;
using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;
using MsdFleet.EdgeAgent.Storage;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>
/// Delta from anything local: before fetching, every missing chunk that some cached image already holds
/// (found through that image's manifest) is copied from it — re-verified, since seeds can rot — and runs
/// of all-zero chunks become holes in the target instead of downloads.
/// </summary>
public sealed partial class LocalSeeder(LocalImageStore store, ILogger<LocalSeeder> logger)
{
    public async Task SeedAsync(PullSession pull, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(pull);
        var (digest, manifest, offsets) = (pull.Digest, pull.Manifest, pull.Offsets);
        var done = pull.Committer.WrittenSnapshot();
        var seeds = new Dictionary<UInt128, (string Path, long Offset)>();
        foreach (var (cached, _) in store.ListImages())
        {
            if (cached == digest || await store.LoadManifestAsync(cached, cancellationToken) is not { } seedManifest)
                continue;
            var seedOffsets = seedManifest.ComputeOffsets();
            for (var i = 0; i < seedManifest.Chunks.Count; i++)
                seeds.TryAdd(Key(seedManifest.Chunks[i].Id), (store.ImagePath(cached), seedOffsets[i]));
        }
        var zeros = ZeroChunkIds.For(manifest.Chunks);
        long zeroBytes = 0, seededBytes = 0;
        var handles = new Dictionary<string, SafeFileHandle>(StringComparer.Ordinal);
        var buffer = ArrayPool<byte>.Shared.Rent(manifest.Chunker.MaxSize);
        try
        {
            for (var i = 0; i < manifest.Chunks.Count; i++)
            {
                var chunk = manifest.Chunks[i];
                if (done.Contains(i))
                    continue;
                if (zeros.IsZero(chunk))
                {
                    // Only this chunk's own bytes (zeros) are ever written here, so the range is zero or a hole.
                    SparseRegions.PunchHole(pull.Handle, offsets[i], chunk.Length);
                    pull.Committer.Written(i, chunk.Length);
                    pull.Progress.Add(chunk.Length);
                    zeroBytes += chunk.Length;
                    continue;
                }
                if (!seeds.TryGetValue(Key(chunk.Id), out var seed))
                    continue;
                if (!handles.TryGetValue(seed.Path, out var seedHandle))
                {
                    try
                    {
                        handles[seed.Path] = seedHandle = File.OpenHandle(seed.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                    }
                    catch (IOException)
                    {
                        continue; // evicted meanwhile: fetch instead
                    }
                }
                var data = buffer.AsMemory(0, chunk.Length);
                if (await RandomAccess.ReadAsync(seedHandle, data, seed.Offset, cancellationToken) != chunk.Length
                    || !SHA256.HashData(data.Span).AsSpan().SequenceEqual(chunk.Id))
                {
                    Log.SeedChunkBad(logger, seed.Path, seed.Offset);
                    continue;
                }
                await RandomAccess.WriteAsync(pull.Handle, data, offsets[i], cancellationToken);
                pull.Committer.Written(i, chunk.Length);
                pull.Progress.Add(chunk.Length);
                seededBytes += chunk.Length;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            foreach (var h in handles.Values)
                h.Dispose();
        }
        pull.Committer.Flush();
        if (zeroBytes + seededBytes > 0)
            Log.Seeded(logger, digest.ToString(), seededBytes, zeroBytes);
    }

    private static UInt128 Key(byte[] id) => System.Buffers.Binary.BinaryPrimitives.ReadUInt128LittleEndian(id);

    private static partial class Log
    {
        [LoggerMessage(5, LogLevel.Information, "Delta for {Digest}: {Seeded} bytes copied from cached images, {Zero} bytes of zero chunks left as holes")]
        public static partial void Seeded(ILogger logger, string digest, long seeded, long zero);

        [LoggerMessage(6, LogLevel.Warning, "Seed chunk at {Offset} of {Path} no longer matches its manifest; fetching it instead")]
        public static partial void SeedChunkBad(ILogger logger, string path, long offset);
    }
}
