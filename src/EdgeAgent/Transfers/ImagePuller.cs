using MsdFleet.Protocol.IO;
using System.Buffers;
using System.Net;
using System.Runtime;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using Microsoft.Extensions.Options;
using MsdFleet.EdgeAgent.Storage;
using MsdFleet.Protocol;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>
/// Pulls one image into <c>incoming/</c>, resumably: the manifest is checked against the digest, the
/// target is pre-allocated, runs of adjacent missing chunks are fetched with one ranged GET each (several
/// in flight), every chunk is verified before it is written at its offset, and the journal records
/// chunks only after their data is on disk. When every chunk is in, the whole image's SHA-256 is checked
/// and the file is renamed atomically into <c>images/</c>.
/// </summary>
public sealed partial class ImagePuller(
    HttpClient http, LocalImageStore store, ImageCache cache, TransferTracker tracker, BandwidthThrottle throttle,
    IOptions<AgentOptions> options, TimeProvider time, ILogger<ImagePuller> logger)
{
    private const int MaxRangeBytes = 8 * 1024 * 1024;
    // Journal commits (an fdatasync each) matter only for power cuts: after a kill, chunks written since
    // the last commit are found again by re-hashing. So commit by volume, as the notes recommend.
    private const long CommitEveryBytes = 64 * 1024 * 1024;
    private const int MaxAttempts = 5;

    public async Task PullAsync(ImageDigest digest, CancellationToken cancellationToken)
    {
        if (store.HasImage(digest))
            return;
        var manifest = await GetManifestAsync(digest, cancellationToken);
        var progress = tracker.Start(digest.ToString(), manifest.Size);
        try
        {
            // A resumed pull already holds part of its bytes on disk.
            var present = File.Exists(store.PartialPath(digest)) ? SparseRegions.DataBytes(store.PartialPath(digest), manifest.Size) : 0;
            using var reservation = await cache.ReserveAsync(digest, manifest.Size - present, cancellationToken);
            await PullChunksAsync(digest, manifest, progress, cancellationToken);
            cache.Touch(digest);
            // A Pi has little memory: give back what a multi-gigabyte pull left behind.
            GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
            GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
            tracker.Remove(digest.ToString());
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            progress.State = TransferState.Failed;
            progress.Error = ex.Message;
            throw;
        }
    }

    private async Task<ImageManifest> GetManifestAsync(ImageDigest digest, CancellationToken cancellationToken)
    {
        var cached = await store.LoadManifestAsync(digest, cancellationToken);
        if (cached is not null)
            return cached;
        using var response = await http.GetAsync(new Uri($"api/v1/blobs/{digest}/manifest", UriKind.Relative), cancellationToken);
        await EnsureSuccessAsync(response, "manifest", cancellationToken);
        var bytes = await response.Content.ReadAsByteArrayAsync(cancellationToken);
        if (ImageDigest.Compute(bytes) != digest)
            throw new PullException($"The manifest served for {digest} does not hash to that digest; refusing it.");
        var manifest = ImageManifest.Parse(bytes);
        await store.SaveManifestAsync(digest, bytes, cancellationToken);
        return manifest;
    }

    private async Task<ImageLayout> GetLayoutAsync(ImageDigest digest, ImageManifest manifest, CancellationToken cancellationToken)
    {
        using var response = await http.GetAsync(new Uri($"api/v1/blobs/{digest}/layout", UriKind.Relative), cancellationToken);
        await EnsureSuccessAsync(response, "layout", cancellationToken);
        var layout = ProtocolSerializer.Deserialize<ImageLayout>(await response.Content.ReadAsByteArrayAsync(cancellationToken), 64 * 1024 * 1024);
        if (layout.Chunks.Count != manifest.Chunks.Count || layout.Sources.Count == 0
            || layout.Chunks.Any(c => c.Source < 0 || c.Source >= layout.Sources.Count || c.Offset < 0))
            throw new PullException($"The layout served for {digest} does not match its manifest.");
        return layout;
    }

    private async Task PullChunksAsync(ImageDigest digest, ImageManifest manifest, TransferProgress progress, CancellationToken cancellationToken)
    {
        var partPath = store.PartialPath(digest);
        var journalPath = store.JournalPath(digest);
        if (!File.Exists(partPath))
            File.Delete(journalPath); // a journal without its data proves nothing
        var offsets = manifest.ComputeOffsets();
        // Pre-allocate a new target (fails early on a full disk); a resumed one keeps its bytes.
        var resuming = File.Exists(partPath);
        using (var handle = File.OpenHandle(partPath, resuming ? FileMode.Open : FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None,
                   FileOptions.None, resuming ? 0 : manifest.Size))
        using (var journal = PullJournal.Open(journalPath, digest, manifest))
        {
            if (RandomAccess.GetLength(handle) != manifest.Size)
                RandomAccess.SetLength(handle, manifest.Size);
            if (resuming)
                RecoverUnjournaledChunks(manifest, offsets, handle, journal);
            progress.Add(journal.Done.Sum(i => (long)manifest.Chunks[i].Length));
            var committer = new JournalCommitter(handle, journal);
            await SeedFromLocalAsync(digest, manifest, offsets, handle, committer, progress, cancellationToken);
            // The whole-image SHA-256 follows the download: a second task hashes chunks in order as soon as
            // they are on disk (read back from the page cache), so only the tail is left when the last range lands.
            var fetching = FetchAllAsync(digest, manifest, offsets, handle, committer, progress, cancellationToken);
            var hashing = HashInOrderAsync(handle, manifest, offsets, committer, fetching, cancellationToken);
            try
            {
                await fetching;
            }
            finally
            {
                await hashing.ContinueWith(_ => { }, TaskScheduler.Default);
            }
            committer.Flush();

            progress.State = TransferState.Verifying;
            var sha256 = await hashing;
            if (!sha256.AsSpan().SequenceEqual(manifest.Sha256))
            {
                handle.Dispose();
                File.Delete(partPath);
                File.Delete(journalPath);
                throw new PullException($"Image {digest} failed its whole-image SHA-256 check after every chunk verified; the local disk may be failing. The partial file was discarded.");
            }
            RandomAccess.FlushToDisk(handle);
        }
        File.Move(partPath, store.ImagePath(digest));
        AtomicFile.SyncDirectory(store.ImagesPath);
        File.Delete(journalPath);
        AtomicFile.SyncDirectory(store.IncomingPath);
        progress.State = TransferState.Complete;
        Log.PullCompleted(logger, digest.ToString(), manifest.Size);
    }

    private async Task FetchAllAsync(ImageDigest digest, ImageManifest manifest, long[] offsets, Microsoft.Win32.SafeHandles.SafeFileHandle handle,
        JournalCommitter committer, TransferProgress progress, CancellationToken cancellationToken)
    {
        for (var layoutAttempt = 1; ; layoutAttempt++)
        {
            // Layout URLs are short-lived and packs may be repacked by GC: a 403/404 from a source
            // means "ask again", and what was already written is not fetched twice.
            var layout = await GetLayoutAsync(digest, manifest, cancellationToken);
            var ranges = PlanRanges(manifest, layout, committer.WrittenSnapshot());
            Log.PullStarting(logger, digest.ToString(), manifest.Size, progress.BytesDone, ranges.Count);
            try
            {
                await Parallel.ForEachAsync(ranges,
                    new ParallelOptions { MaxDegreeOfParallelism = options.Value.ParallelRequests, CancellationToken = cancellationToken },
                    async (range, ct) => await FetchRangeWithRetryAsync(digest, manifest, layout, offsets, range, handle, committer, progress, ct));
                return;
            }
            catch (LayoutExpiredException) when (layoutAttempt < 3)
            {
                committer.Flush();
            }
        }
    }

    private static async Task<byte[]> HashInOrderAsync(Microsoft.Win32.SafeHandles.SafeFileHandle handle, ImageManifest manifest, long[] offsets,
        JournalCommitter committer, Task fetching, CancellationToken cancellationToken)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = ArrayPool<byte>.Shared.Rent(manifest.Chunker.MaxSize);
        try
        {
            for (var i = 0; i < manifest.Chunks.Count; i++)
            {
                while (!committer.IsWritten(i))
                {
                    if (fetching.IsCompleted)
                    {
                        await fetching; // rethrows the download's failure
                        if (!committer.IsWritten(i))
                            throw new PullException($"Chunk {i} was never written although the download finished.");
                        break;
                    }
                    await Task.Delay(2, cancellationToken);
                }
                var span = buffer.AsMemory(0, manifest.Chunks[i].Length);
                if (await RandomAccess.ReadAsync(handle, span, offsets[i], cancellationToken) != span.Length)
                    throw new PullException("The partial file is shorter than the image.");
                hash.AppendData(span.Span);
            }
            return hash.GetHashAndReset();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// Delta from anything local: before fetching, every missing chunk that some cached image already
    /// holds (found through that image's manifest) is copied from it — re-verified, since seeds can rot —
    /// and runs of all-zero chunks become holes in the target instead of downloads.
    /// </summary>
    private async Task SeedFromLocalAsync(ImageDigest digest, ImageManifest manifest, long[] offsets,
        Microsoft.Win32.SafeHandles.SafeFileHandle handle, JournalCommitter committer, TransferProgress progress, CancellationToken cancellationToken)
    {
        var done = committer.WrittenSnapshot();
        var seeds = new Dictionary<UInt128, (string Path, long Offset)>();
        foreach (var (cached, _) in store.ListImages())
        {
            if (cached == digest || await store.LoadManifestAsync(cached, cancellationToken) is not { } seedManifest)
                continue;
            var seedOffsets = seedManifest.ComputeOffsets();
            for (var i = 0; i < seedManifest.Chunks.Count; i++)
                seeds.TryAdd(Key(seedManifest.Chunks[i].Id), (store.ImagePath(cached), seedOffsets[i]));
        }
        var zeroIds = new Dictionary<int, byte[]>();
        long zeroBytes = 0, seededBytes = 0;
        var handles = new Dictionary<string, Microsoft.Win32.SafeHandles.SafeFileHandle>(StringComparer.Ordinal);
        var buffer = ArrayPool<byte>.Shared.Rent(manifest.Chunker.MaxSize);
        try
        {
            for (var i = 0; i < manifest.Chunks.Count; i++)
            {
                var chunk = manifest.Chunks[i];
                if (done.Contains(i))
                    continue;
                if (!zeroIds.TryGetValue(chunk.Length, out var zeroId))
                    zeroIds[chunk.Length] = zeroId = SHA256.HashData(new byte[chunk.Length]);
                if (chunk.Id.AsSpan().SequenceEqual(zeroId))
                {
                    // Only this chunk's own bytes (zeros) are ever written here, so the range is zero or a hole.
                    SparseRegions.PunchHole(handle, offsets[i], chunk.Length);
                    committer.Written(i, chunk.Length);
                    progress.Add(chunk.Length);
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
                await RandomAccess.WriteAsync(handle, data, offsets[i], cancellationToken);
                committer.Written(i, chunk.Length);
                progress.Add(chunk.Length);
                seededBytes += chunk.Length;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            foreach (var h in handles.Values)
                h.Dispose();
        }
        committer.Flush();
        if (zeroBytes + seededBytes > 0)
            Log.Seeded(logger, digest.ToString(), seededBytes, zeroBytes);
    }

    private static UInt128 Key(byte[] id) => System.Buffers.Binary.BinaryPrimitives.ReadUInt128LittleEndian(id);

    /// <summary>
    /// After a crash, chunks written after the last journal commit are usually still on disk (a killed
    /// process loses no page cache). Each such chunk is re-hashed — only in regions the file really holds
    /// data, never the ones the journal already proves — and journaled after an fdatasync if it matches,
    /// so a kill costs only the bytes that were in flight. After a power cut a lost chunk simply fails
    /// its hash and is fetched again.
    /// </summary>
    private void RecoverUnjournaledChunks(ImageManifest manifest, long[] offsets, Microsoft.Win32.SafeHandles.SafeFileHandle handle, PullJournal journal)
    {
        var started = time.GetTimestamp();
        var data = SparseRegions.DataRanges(handle, manifest.Size);
        var recovered = new List<int>();
        var buffer = ArrayPool<byte>.Shared.Rent(manifest.Chunker.MaxSize);
        try
        {
            for (var i = 0; i < manifest.Chunks.Count; i++)
            {
                var chunk = manifest.Chunks[i];
                if (journal.Done.Contains(i) || !SparseRegions.Overlaps(data, offsets[i], offsets[i + 1]))
                    continue;
                var span = buffer.AsSpan(0, chunk.Length);
                if (RandomAccess.Read(handle, span, offsets[i]) == chunk.Length && SHA256.HashData(span).AsSpan().SequenceEqual(chunk.Id))
                    recovered.Add(i);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        if (recovered.Count > 0)
        {
            RandomAccess.FlushToDisk(handle);
            journal.Commit(recovered);
        }
        Log.Recovered(logger, recovered.Count, time.GetElapsedTime(started).TotalMilliseconds);
    }

    /// <summary>
    /// Runs of missing chunks that are consecutive in the image and back to back in one source, each at
    /// most <see cref="MaxRangeBytes"/> (or one chunk): one ranged GET each.
    /// </summary>
    internal static List<(int First, int Last)> PlanRanges(ImageManifest manifest, ImageLayout layout, IReadOnlySet<int> done)
    {
        var ranges = new List<(int, int)>();
        var i = 0;
        var count = manifest.Chunks.Count;
        while (i < count)
        {
            if (done.Contains(i))
            {
                i++;
                continue;
            }
            var first = i;
            long bytes = manifest.Chunks[i].Length;
            while (i + 1 < count && !done.Contains(i + 1)
                   && layout.Chunks[i + 1].Source == layout.Chunks[i].Source
                   && layout.Chunks[i + 1].Offset == layout.Chunks[i].Offset + manifest.Chunks[i].Length
                   && bytes + manifest.Chunks[i + 1].Length <= MaxRangeBytes)
            {
                i++;
                bytes += manifest.Chunks[i].Length;
            }
            ranges.Add((first, i));
            i++;
        }
        return ranges;
    }

    private async Task FetchRangeWithRetryAsync(ImageDigest digest, ImageManifest manifest, ImageLayout layout, long[] offsets, (int First, int Last) range,
        Microsoft.Win32.SafeHandles.SafeFileHandle handle, JournalCommitter committer, TransferProgress progress, CancellationToken cancellationToken)
    {
        var next = range.First;
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                next = await FetchRangeAsync(digest, manifest, layout, offsets, next, range.Last, handle, committer, progress, cancellationToken);
                return;
            }
            catch (Exception ex) when (attempt < MaxAttempts && ex is PullException or HttpRequestException or IOException && ex is not LayoutExpiredException
                                       && !cancellationToken.IsCancellationRequested)
            {
                next = committer.FirstUnwritten(next, range.Last);
                var backoff = TimeSpan.FromMilliseconds(200 * Math.Pow(2, attempt - 1));
                Log.RangeRetry(logger, digest.ToString(), offsets[next], attempt, ex.Message);
                await Task.Delay(backoff, time, cancellationToken);
            }
        }
    }

    /// <returns>The index after the last chunk written.</returns>
    private async Task<int> FetchRangeAsync(ImageDigest digest, ImageManifest manifest, ImageLayout layout, long[] offsets, int first, int last,
        Microsoft.Win32.SafeHandles.SafeFileHandle handle, JournalCommitter committer, TransferProgress progress, CancellationToken cancellationToken)
    {
        var start = layout.Chunks[first].Offset;
        var end = layout.Chunks[last].Offset + manifest.Chunks[last].Length - 1;
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(http.BaseAddress!, layout.Sources[layout.Chunks[first].Source]));
        request.Headers.Range = new RangeHeaderValue(start, end);
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        if (response.StatusCode is HttpStatusCode.Forbidden or HttpStatusCode.NotFound)
            throw new LayoutExpiredException($"A chunk source for {digest} answered {(int)response.StatusCode}; fetching a fresh layout.");
        await EnsureSuccessAsync(response, "content", cancellationToken);
        if (response.StatusCode != HttpStatusCode.PartialContent
            || response.Content.Headers.ContentRange is not { From: var from } || from != start)
            throw new PullException($"A chunk source for {digest} answered a range request with {(int)response.StatusCode} and no matching Content-Range.");
        await using var body = await response.Content.ReadAsStreamAsync(cancellationToken);
        var buffer = ArrayPool<byte>.Shared.Rent(manifest.Chunker.MaxSize);
        try
        {
            for (var i = first; i <= last; i++)
            {
                var chunk = manifest.Chunks[i];
                var data = buffer.AsMemory(0, chunk.Length);
                // A source that stops sending is a failure like any other: retried with back-off.
                using var stall = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                stall.CancelAfter(options.Value.StallTimeout);
                try
                {
                    await body.ReadExactlyAsync(data, stall.Token);
                }
                catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested)
                {
                    throw new PullException($"The source for {digest} stalled: no chunk within {options.Value.StallTimeout.TotalSeconds:0} s (chunk {i}).", ex);
                }
                catch (IOException ex) when (!cancellationToken.IsCancellationRequested)
                {
                    // A short body (EndOfStreamException) or a dropped connection mid-body (HttpIOException).
                    throw new PullException($"The response for {digest} ended early, inside chunk {i}: {ex.Message}", ex);
                }
                if (!SHA256.HashData(data.Span).AsSpan().SequenceEqual(chunk.Id))
                    throw new PullException($"Chunk {i} of {digest} failed verification (its SHA-256 does not match the manifest); fetching it again.");
                await RandomAccess.WriteAsync(handle, data, offsets[i], cancellationToken);
                committer.Written(i, chunk.Length);
                progress.Add(chunk.Length);
                await throttle.WaitAsync(chunk.Length, cancellationToken);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        return last + 1;
    }

    private static async Task EnsureSuccessAsync(HttpResponseMessage response, string what, CancellationToken cancellationToken)
    {
        if (response.IsSuccessStatusCode)
            return;
        var detail = await response.Content.ReadAsStringAsync(cancellationToken);
        throw response.StatusCode switch
        {
            HttpStatusCode.Unauthorized => new PullException($"The Coordinator refused the agent's credentials for the image {what} (401); check Agent:Id and Agent:Secret."),
            HttpStatusCode.Forbidden => new PullException($"The Coordinator refused access to the image {what} (403): {Truncate(detail)}"),
            HttpStatusCode.NotFound => new PullException($"The Coordinator has no such image {what} (404): {Truncate(detail)}"),
            _ => new HttpRequestException($"Fetching the image {what} failed with HTTP {(int)response.StatusCode}: {Truncate(detail)}"),
        };
    }

    private static string Truncate(string text) => text.Length <= 300 ? text : text[..300];

    /// <summary>
    /// Batches journal commits: the data file is flushed first, then the records for the chunks it
    /// covers are appended, so the journal never claims bytes that a power cut could lose.
    /// </summary>
    private sealed class JournalCommitter(Microsoft.Win32.SafeHandles.SafeFileHandle handle, PullJournal journal)
    {
        private readonly Lock _lock = new();
        private readonly List<int> _pending = [];
        private readonly HashSet<int> _written = [];
        private long _pendingBytes;

        public void Written(int index, int length)
        {
            lock (_lock)
            {
                _pending.Add(index);
                _written.Add(index);
                _pendingBytes += length;
                if (_pendingBytes >= CommitEveryBytes)
                    FlushLocked();
            }
        }

        /// <summary>Journaled chunks plus those written since; never fetched again in this run.</summary>
        public HashSet<int> WrittenSnapshot()
        {
            lock (_lock)
                return new HashSet<int>(_written.Concat(journal.Done));
        }

        public bool IsWritten(int index)
        {
            lock (_lock)
                return _written.Contains(index) || journal.Done.Contains(index);
        }

        public int FirstUnwritten(int from, int last)
        {
            lock (_lock)
            {
                var i = from;
                while (i <= last && _written.Contains(i))
                    i++;
                return i;
            }
        }

        public void Flush()
        {
            lock (_lock)
                FlushLocked();
        }

        private void FlushLocked()
        {
            if (_pending.Count == 0)
                return;
            RandomAccess.FlushToDisk(handle);
            journal.Commit(_pending);
            _pending.Clear();
            _pendingBytes = 0;
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Pulling {Digest}: {Size} bytes, {Done} already verified, {Ranges} ranges to fetch")]
        public static partial void PullStarting(ILogger logger, string digest, long size, long done, int ranges);

        [LoggerMessage(2, LogLevel.Information, "Pulled and verified {Digest} ({Size} bytes)")]
        public static partial void PullCompleted(ILogger logger, string digest, long size);

        [LoggerMessage(5, LogLevel.Information, "Delta for {Digest}: {Seeded} bytes copied from cached images, {Zero} bytes of zero chunks left as holes")]
        public static partial void Seeded(ILogger logger, string digest, long seeded, long zero);

        [LoggerMessage(6, LogLevel.Warning, "Seed chunk at {Offset} of {Path} no longer matches its manifest; fetching it instead")]
        public static partial void SeedChunkBad(ILogger logger, string path, long offset);

        [LoggerMessage(4, LogLevel.Information, "Resume: {Count} chunks written after the last journal commit verified and kept ({Milliseconds:0} ms)")]
        public static partial void Recovered(ILogger logger, int count, double milliseconds);

        [LoggerMessage(3, LogLevel.Warning, "Range of {Digest} at offset {Offset} failed (attempt {Attempt}): {Reason}; retrying")]
        public static partial void RangeRetry(ILogger logger, string digest, long offset, int attempt, string reason);
    }
}

/// <summary>A source URL of the layout is no longer valid (expired, or the pack was repacked).</summary>
public sealed class LayoutExpiredException : Exception
{
    public LayoutExpiredException() { }
    public LayoutExpiredException(string message) : base(message) { }
    public LayoutExpiredException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>A pull failed for a reason worth reporting to the operator as it is.</summary>
public sealed class PullException : Exception
{
    public PullException() { }
    public PullException(string message) : base(message) { }
    public PullException(string message, Exception innerException) : base(message, innerException) { }
}
