using MsdFleet.Protocol.IO;
using System.Security.Cryptography;
using Microsoft.Extensions.Options;
using MsdFleet.EdgeAgent.Gadget;
using MsdFleet.EdgeAgent.Reconciliation;
using MsdFleet.EdgeAgent.Transfers;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.EdgeAgent.Storage;

/// <summary>
/// Keeps the local image cache within its byte quota and trustworthy. Space is reserved before a pull
/// starts; when it does not fit, least-recently-used images that are neither attached to a LUN nor named
/// by the desired state (a drive's or a staged image) are evicted; if that is still not enough the pull fails with the numbers an
/// operator needs. Before an image is attached it is checked against its manifest (full or sampled); a
/// corrupt file is moved to <c>quarantine/</c> so the next pass pulls it again. An attached image is never
/// modified, moved or evicted.
/// </summary>
public sealed partial class ImageCache(
    LocalImageStore store, WorkingCopyStore workingCopies, IGadgetDriver gadget, DesiredStateHolder desired, IOptions<AgentOptions> options, TimeProvider time,
    ILogger<ImageCache> logger)
{
    private readonly Lock _lock = new();
    private long _reserved;

    /// <summary>
    /// Reserves <paramref name="bytes"/> for a pull of <paramref name="digest"/> (or a working copy made from
    /// it), evicting if needed. Working copies count against the quota but are never evicted: they hold
    /// what a server wrote.
    /// </summary>
    public async Task<IDisposable> ReserveAsync(ImageDigest digest, long bytes, CancellationToken cancellationToken)
    {
        // Read once before the lock: the gadget may be another process (kvmd).
        var attached = (await gadget.ReadDrivesAsync(cancellationToken)).Select(d => store.DigestOfImagePath(d.File)).OfType<ImageDigest>()
            .Select(d => d.ToString()).ToHashSet(StringComparer.Ordinal);
        lock (_lock)
        {
            var (free, evictable) = Room(digest, attached);
            if (bytes > free)
            {
                foreach (var (victim, size) in evictable)
                {
                    if (bytes <= free)
                        break;
                    Evict(victim);
                    free += size;
                }
            }
            if (bytes > free)
            {
                var remaining = Room(digest, attached);
                throw new PullException(
                    $"Not enough space to pull {digest}: needs {bytes} bytes, free {Math.Max(0, remaining.Free)}, evictable {remaining.Evictable.Sum(e => e.Size)} " +
                    $"(quota {(options.Value.CacheQuotaBytes > 0 ? options.Value.CacheQuotaBytes.ToString(System.Globalization.CultureInfo.InvariantCulture) : "none")}). " +
                    "Detach or stop wanting other images, or raise Agent:CacheQuotaBytes.");
            }
            _reserved += bytes;
            return new Reservation(this, bytes);
        }
    }

    /// <summary>Marks an image as just used (LRU order).</summary>
    public void Touch(ImageDigest digest)
    {
        var path = UsedPath(digest);
        File.WriteAllText(path, string.Empty);
        File.SetLastWriteTimeUtc(path, time.GetUtcNow().UtcDateTime);
    }

    /// <summary>Checks a cached image before it is attached; quarantines it and returns false when it is corrupt.</summary>
    public async Task<bool> VerifyAsync(ImageDigest digest, CancellationToken cancellationToken)
    {
        var problem = await CheckAsync(digest, cancellationToken);
        if (problem is null)
            return true;
        Quarantine(digest, problem);
        return false;
    }

    /// <summary>What is wrong with a cached image (per Agent:VerifyBeforeAttach), or null. Reads only.</summary>
    public async Task<string?> CheckAsync(ImageDigest digest, CancellationToken cancellationToken)
    {
        var mode = options.Value.VerifyBeforeAttach;
        if (mode == "none")
            return null;
        var manifest = await store.LoadManifestAsync(digest, cancellationToken);
        var path = store.ImagePath(digest);
        if (manifest is null)
            return "its manifest is missing or damaged";
        if (new FileInfo(path).Length != manifest.Size)
            return $"its size is {new FileInfo(path).Length}, not {manifest.Size}";
        if (mode == "full")
        {
            await using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 20, FileOptions.Asynchronous | FileOptions.SequentialScan);
            return (await SHA256.HashDataAsync(stream, cancellationToken)).AsSpan().SequenceEqual(manifest.Sha256)
                ? null : "its SHA-256 does not match the manifest";
        }
        return SampleCheck(path, manifest);
    }

    private string? SampleCheck(string path, ImageManifest manifest)
    {
        var offsets = manifest.ComputeOffsets();
        var count = manifest.Chunks.Count;
        var picks = new HashSet<int>();
        if (count > 0)
        {
            picks.Add(0);
            picks.Add(count - 1);
        }
        for (var i = 0; i < Math.Min(options.Value.VerifySampleChunks, count); i++)
            picks.Add(Random.Shared.Next(count));
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var buffer = new byte[manifest.Chunker.MaxSize];
        foreach (var i in picks.Order())
        {
            var span = buffer.AsSpan(0, manifest.Chunks[i].Length);
            if (RandomAccess.Read(handle, span, offsets[i]) != span.Length || !SHA256.HashData(span).AsSpan().SequenceEqual(manifest.Chunks[i].Id))
                return $"chunk {i} at offset {offsets[i]} does not match the manifest";
        }
        return null;
    }

    public Task QuarantineAsync(ImageDigest digest, string problem, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Quarantine(digest, problem);
        return Task.CompletedTask;
    }

    private void Quarantine(ImageDigest digest, string problem)
    {
        var folder = Path.Combine(store.Root, "quarantine");
        Directory.CreateDirectory(folder);
        var target = Path.Combine(folder, $"{digest.Hex}-{time.GetUtcNow().ToUnixTimeSeconds()}.img");
        File.Move(store.ImagePath(digest), target);
        AtomicFile.SyncDirectory(store.ImagesPath);
        Log.Quarantined(logger, digest.ToString(), problem, target);
    }

    private (long Free, List<(ImageDigest Digest, long Size)> Evictable) Room(ImageDigest incoming, IReadOnlySet<string> attached)
    {
        var images = store.ListImages();
        var (diskFree, _) = store.Space();
        var free = diskFree - _reserved;
        if (options.Value.CacheQuotaBytes > 0)
            free = Math.Min(free, options.Value.CacheQuotaBytes - images.Sum(i => i.Size) - workingCopies.DataBytes() - _reserved);
        var protectedDigests = new HashSet<string>(attached, StringComparer.Ordinal) { incoming.ToString() };
        foreach (var drive in desired.Current?.Drives ?? [])
            if (drive.ImageDigest is not null)
                protectedDigests.Add(drive.ImageDigest);
        foreach (var staged in desired.Current?.Prefetch ?? [])
            protectedDigests.Add(staged.ImageDigest);
        var evictable = images.Where(i => !protectedDigests.Contains(i.Digest.ToString()))
            .OrderBy(i => LastUsed(i.Digest)).ToList();
        return (free, evictable);
    }

    private void Evict(ImageDigest digest)
    {
        File.Delete(store.ImagePath(digest));
        File.Delete(UsedPath(digest));
        AtomicFile.SyncDirectory(store.ImagesPath);
        Log.Evicted(logger, digest.ToString());
    }

    private DateTime LastUsed(ImageDigest digest)
    {
        var used = UsedPath(digest);
        return File.Exists(used) ? File.GetLastWriteTimeUtc(used) : File.GetLastWriteTimeUtc(store.ImagePath(digest));
    }

    private string UsedPath(ImageDigest digest) => Path.Combine(store.MetadataPath, digest.Hex + ".used");

    private sealed class Reservation(ImageCache cache, long bytes) : IDisposable
    {
        private int _released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0)
            {
                lock (cache._lock)
                    cache._reserved -= bytes;
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Evicted {Digest} from the cache (least recently used, not attached, not desired)")]
        public static partial void Evicted(ILogger logger, string digest);

        [LoggerMessage(2, LogLevel.Error, "Cached image {Digest} failed verification before attach ({Problem}); moved to {Path} and will be pulled again")]
        public static partial void Quarantined(ILogger logger, string digest, string problem, string path);
    }
}
