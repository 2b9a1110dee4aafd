using System.Security.Cryptography;
using System.Threading.Channels;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// Turns a byte stream into stored chunks plus a manifest, in constant memory, hashing each byte once per
/// digest and each digest on its own core. The reader cuts the stream with the content-defined chunker
/// and copies the chunks, back to back, into batches of about 1 MiB. Each batch then goes to three
/// consumers at once: a thread-pool task computes its chunk ids; one long-running task feeds the
/// whole-image SHA-256 (which must see bytes in order) with the batch as one span; the appender adds the
/// chunks, in image order, to the pack writer (so an image's chunks sit contiguously in packs and agents
/// fetch long runs with one request). A batch's buffer is reused once both the whole-image hasher and the
/// appender are done with it. Nothing becomes visible in the catalog until the manifest and every chunk
/// are durable; an aborted upload leaves only unreferenced packs that GC reclaims. Callers hold a shared
/// <see cref="StoreGate"/> lease from before the ingest until the catalog entry is committed: in between,
/// the new manifest is referenced by nothing, and GC must not run.
/// Batch buffers are owned by the upload (a fixed ring), so memory per upload is a known constant whatever
/// the image size; batching (instead of a task per 64 KiB chunk) keeps thread wake-ups to ~1 per MiB.
/// </summary>
public sealed class ImageIngestor(ChunkStore chunks, ContentChunker chunker, MediaDetector media)
{
    private const int BatchBytes = 1024 * 1024;
    private const int BatchesInFlight = 4;

    public async Task<IngestResult> IngestAsync(Stream source, string? expectedSha256, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(source);
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var capacity = BatchBytes + chunker.Parameters.MaxSize;
        using var ring = new ChunkBatchRing(BatchesInFlight + 2, capacity);
        var toAppend = Channel.CreateBounded<ChunkBatch>(new BoundedChannelOptions(BatchesInFlight) { SingleWriter = true, SingleReader = true });
        var toHash = Channel.CreateBounded<ChunkBatch>(new BoundedChannelOptions(BatchesInFlight) { SingleWriter = true, SingleReader = true });
        await using var writer = new PackWriter(chunks);
        var entries = new List<ManifestChunk>();
        var probe = new MediaProbe();

        // Both consumers call Release; the second one hands the buffer back to the reader.
        var appender = Task.Run(async () =>
        {
            await foreach (var batch in toAppend.Reader.ReadAllAsync(cancel.Token))
            {
                try
                {
                    var ids = await batch.Ids!;
                    var offset = 0;
                    for (var i = 0; i < batch.Lengths.Count; i++)
                    {
                        var length = batch.Lengths[i];
                        await writer.AddAsync(ids[i], batch.Buffer.AsMemory(offset, length), cancel.Token);
                        entries.Add(new ManifestChunk { Id = ids[i], Length = length });
                        offset += length;
                    }
                }
                finally
                {
                    ring.Release(batch);
                }
            }
            await writer.CompleteAsync(cancel.Token);
        }, cancel.Token);

        using var wholeImage = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var hasher = Task.Run(async () =>
        {
            await foreach (var batch in toHash.Reader.ReadAllAsync(cancel.Token))
            {
                try
                {
                    wholeImage.AppendData(batch.Buffer, 0, batch.Used);
                }
                finally
                {
                    ring.Release(batch);
                }
            }
        }, cancel.Token);

        // A consumer that fails stops the reader too, which may be waiting for room in a full channel.
        foreach (var consumer in (Task[])[appender, hasher])
            _ = consumer.ContinueWith(_ => cancel.Cancel(), CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        byte[] sha256;
        long size = 0;
        ChunkBatch? current = null;
        async Task SendAsync(ChunkBatch batch)
        {
            batch.Holders = 2;
            batch.StartHashingIds();
            await toHash.Writer.WriteAsync(batch, cancel.Token);
            await toAppend.Writer.WriteAsync(batch, cancel.Token);
        }
        try
        {
            await foreach (var chunk in StreamChunker.ReadChunksAsync(source, chunker, cancel.Token))
            {
                probe.Observe(size, chunk.Span);
                if (current is not null && current.Used + chunk.Length > BatchBytes)
                {
                    await SendAsync(current);
                    current = null;
                }
                current ??= await ring.TakeAsync(cancel.Token);
                current.Add(chunk.Span);
                size += chunk.Length;
            }
            if (current is not null)
                await SendAsync(current);
            toHash.Writer.Complete();
            toAppend.Writer.Complete();
            await Task.WhenAll(appender, hasher);
            sha256 = wholeImage.GetHashAndReset();
        }
        catch
        {
            await cancel.CancelAsync();
            toHash.Writer.TryComplete();
            toAppend.Writer.TryComplete();
            await Task.WhenAll(appender, hasher).ContinueWith(_ => { }, TaskScheduler.Default);
            throw;
        }

        var sha256Hex = Convert.ToHexStringLower(sha256);
        if (expectedSha256 is not null && !string.Equals(expectedSha256, sha256Hex, StringComparison.OrdinalIgnoreCase))
        {
            throw new ApiException(StatusCodes.Status422UnprocessableEntity, "sha256-mismatch",
                $"The uploaded bytes have SHA-256 {sha256Hex}, not the expected {expectedSha256}; nothing was stored in the catalog.");
        }
        var manifest = new ImageManifest { Size = size, Sha256 = sha256, Chunker = chunker.Parameters, Chunks = entries };
        var digest = await CommitManifestAsync(manifest, cancellationToken);
        return new IngestResult(digest, manifest, writer.NewBytes, media.Classify(probe, size));
    }

    /// <summary>Stores a manifest whose chunks are all stored; returns its digest.</summary>
    public async Task<ImageDigest> CommitManifestAsync(ImageManifest manifest, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        var bytes = manifest.ToBytes();
        var digest = ImageDigest.Compute(bytes);
        await chunks.Objects.FlushAsync(cancellationToken); // chunks durable before anything references them
        await chunks.Objects.PutAsync(ObjectKeys.Manifest(digest), bytes, cancellationToken);
        await chunks.Objects.FlushAsync(cancellationToken);
        return digest;
    }
}

public sealed record IngestResult(ImageDigest Digest, ImageManifest Manifest, long NewBytes, MediaInfo Media);
