using System.Buffers;
using System.Security.Cryptography;
using Microsoft.Extensions.Options;
using MsdFleet.EdgeAgent.Storage;
using MsdFleet.Protocol.IO;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>
/// Pulls one image into <c>incoming/</c>, resumably, and is the only place that puts an image into
/// <c>images/</c>: the manifest is checked against the digest (<see cref="BlobClient"/>), space is reserved
/// (<see cref="ImageCache"/>), the target is pre-allocated, a resumed file is re-checked
/// (<see cref="PartialFileRecovery"/>), local chunks are copied (<see cref="LocalSeeder"/>), the rest is
/// fetched in ranged GETs (<see cref="RangePlanner"/>, several in flight), every chunk is verified before
/// it is written at its offset, and the journal records chunks only after their data is on disk
/// (<see cref="JournalCommitter"/>). When every chunk is written and flushed, the file is renamed
/// atomically into <c>images/</c>.
/// </summary>
public sealed partial class ImagePuller(
    BlobClient blobs, LocalImageStore store, ImageCache cache, TransferTracker tracker, BandwidthThrottle throttle,
    LocalSeeder seeder, PartialFileRecovery recovery, IOptions<AgentOptions> options, TimeProvider time, ILogger<ImagePuller> logger)
{
    // Journal commits (an fdatasync each) matter only for power cuts: after a kill, chunks written since
    // the last commit are found again by re-hashing. So commit by volume, as the notes recommend.
    private const long CommitEveryBytes = 64 * 1024 * 1024;
    private const int MaxAttempts = 5;

    /// <param name="own">This pull's own cap (a rollout's share of its site's budget), applied on top of the agent's; null for none.</param>
    public async Task PullAsync(ImageDigest digest, CancellationToken cancellationToken, BandwidthThrottle? own = null)
    {
        if (store.HasImage(digest))
            return;
        var manifest = await blobs.GetManifestAsync(digest, cancellationToken);
        var progress = tracker.Start(digest.ToString(), manifest.Size);
        try
        {
            // A resumed pull already holds part of its bytes on disk.
            var present = File.Exists(store.PartialPath(digest)) ? SparseRegions.DataBytes(store.PartialPath(digest), manifest.Size) : 0;
            using var reservation = await cache.ReserveAsync(digest, manifest.Size - present, cancellationToken);
            await PullChunksAsync(digest, manifest, progress, own, cancellationToken);
            cache.Touch(digest);
            tracker.Remove(digest.ToString());
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            progress.State = TransferState.Failed;
            progress.Error = ex.Message;
            throw;
        }
        finally
        {
            // A pull nobody wants any more was cancelled: it is no transfer to report (one paused by its window says so itself, from where it got).
            if (cancellationToken.IsCancellationRequested)
                tracker.Remove(digest.ToString(), keepLast: true);
        }
    }

    private async Task PullChunksAsync(ImageDigest digest, ImageManifest manifest, TransferProgress progress, BandwidthThrottle? own, CancellationToken cancellationToken)
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
                recovery.Recover(manifest, offsets, handle, journal);
            progress.Add(journal.Done.Sum(i => (long)manifest.Chunks[i].Length));
            var pull = new PullSession(digest, manifest, offsets, handle, new JournalCommitter(handle, journal, CommitEveryBytes), progress) { Throttle = own };
            try
            {
                await seeder.SeedAsync(pull, cancellationToken);
                await FetchAllAsync(pull, cancellationToken);
            }
            finally
            {
                // A background commit must not outlive the handle and the journal it writes to.
                pull.Committer.WaitIdle();
            }
            pull.Committer.Flush();
            progress.State = TransferState.Verifying;
            // Every chunk is now on disk and was verified before it was written (fetched, seeded or
            // recovered); the journal never records one that was not. That is the whole image: see VerifyComplete.
            VerifyComplete(pull);
            RandomAccess.FlushToDisk(handle);
        }
        File.Move(partPath, store.ImagePath(digest));
        AtomicFile.SyncDirectory(store.ImagesPath);
        File.Delete(journalPath);
        AtomicFile.SyncDirectory(store.IncomingPath);
        progress.State = TransferState.Complete;
        Log.PullCompleted(logger, digest.ToString(), manifest.Size);
    }

    private async Task FetchAllAsync(PullSession pull, CancellationToken cancellationToken)
    {
        for (var layoutAttempt = 1; ; layoutAttempt++)
        {
            // Layout URLs are short-lived and packs may be repacked by GC: a 403/404 from a source
            // means "ask again", and what was already written is not fetched twice.
            var layout = await blobs.GetLayoutAsync(pull.Digest, pull.Manifest, cancellationToken);
            // Capped (the agent's cap or this pull's own): one stream of about a second's worth per request is as fast as several,
            // and a stop wastes at most one range.
            var cap = new[] { throttle.BytesPerSecond, pull.Throttle?.BytesPerSecond ?? 0 }.Where(r => r > 0).DefaultIfEmpty(0).Min();
            var ranges = RangePlanner.Plan(pull.Manifest, layout, pull.Committer.WrittenSnapshot(), RangePlanner.RangeBytesFor(cap));
            Log.PullStarting(logger, pull.Digest.ToString(), pull.Manifest.Size, pull.Progress.BytesDone, ranges.Count);
            try
            {
                await Parallel.ForEachAsync(ranges,
                    new ParallelOptions { MaxDegreeOfParallelism = cap > 0 ? 1 : options.Value.ParallelRequests, CancellationToken = cancellationToken },
                    async (range, ct) => await FetchRangeWithRetryAsync(pull, layout, range, ct));
                return;
            }
            catch (LayoutExpiredException) when (layoutAttempt < 3)
            {
                pull.Committer.Flush();
            }
        }
    }

    /// <summary>
    /// Why there is no second, whole-image SHA-256 pass: the image's digest is the SHA-256 of its manifest
    /// (checked by <see cref="BlobClient"/>), the manifest lists every chunk's SHA-256 and length, and each
    /// chunk was hashed against it before it was written at its offset. The bytes on disk are therefore the
    /// manifest's bytes unless SHA-256 collides; hashing them again in order proved nothing more (it read
    /// them back from the page cache, not from the disk) and cost a second hash of every byte — on a
    /// Raspberry Pi 4, whose cores have no SHA instructions, half of the pull's speed. What is left to
    /// check is that no chunk was skipped. Bytes the disk later loses are caught by Agent:VerifyBeforeAttach.
    /// </summary>
    private static void VerifyComplete(PullSession pull)
    {
        for (var i = 0; i < pull.Manifest.Chunks.Count; i++)
            if (!pull.Committer.IsWritten(i))
                throw new PullException($"Chunk {i} of {pull.Digest} was never written although the download finished.");
    }

    private async Task FetchRangeWithRetryAsync(PullSession pull, ImageLayout layout, (int First, int Last) range, CancellationToken cancellationToken)
    {
        var next = range.First;
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                next = await FetchRangeAsync(pull, layout, next, range.Last, cancellationToken);
                return;
            }
            catch (Exception ex) when (attempt < MaxAttempts && ex is PullException or HttpRequestException or IOException && ex is not LayoutExpiredException
                                       && !cancellationToken.IsCancellationRequested)
            {
                next = pull.Committer.FirstUnwritten(next, range.Last);
                var backoff = TimeSpan.FromMilliseconds(200 * Math.Pow(2, attempt - 1));
                Log.RangeRetry(logger, pull.Digest.ToString(), pull.Offsets[next], attempt, ex.Message);
                await Task.Delay(backoff, time, cancellationToken);
            }
        }
    }

    /// <returns>The index after the last chunk written.</returns>
    private async Task<int> FetchRangeAsync(PullSession pull, ImageLayout layout, int first, int last, CancellationToken cancellationToken)
    {
        var (digest, manifest) = (pull.Digest, pull.Manifest);
        var start = layout.Chunks[first].Offset;
        var end = layout.Chunks[last].Offset + manifest.Chunks[last].Length - 1;
        using var response = await blobs.GetRangeAsync(digest, layout, layout.Chunks[first].Source, start, end, cancellationToken);
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
                await RandomAccess.WriteAsync(pull.Handle, data, pull.Offsets[i], cancellationToken);
                pull.Committer.Written(i, chunk.Length);
                pull.Progress.Add(chunk.Length);
                await throttle.WaitAsync(chunk.Length, cancellationToken);
                if (pull.Throttle is { } ownCap)
                    await ownCap.WaitAsync(chunk.Length, cancellationToken);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        return last + 1;
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Pulling {Digest}: {Size} bytes, {Done} already verified, {Ranges} ranges to fetch")]
        public static partial void PullStarting(ILogger logger, string digest, long size, long done, int ranges);

        [LoggerMessage(2, LogLevel.Information, "Pulled and verified {Digest} ({Size} bytes)")]
        public static partial void PullCompleted(ILogger logger, string digest, long size);

        [LoggerMessage(3, LogLevel.Warning, "Range of {Digest} at offset {Offset} failed (attempt {Attempt}): {Reason}; retrying")]
        public static partial void RangeRetry(ILogger logger, string digest, long offset, int attempt, string reason);
    }
}
