using System.Security.Cryptography;
using System.Threading.Channels;
using MsdFleet.Protocol.Chunking;

namespace MsdFleet.Protocol.Manifests;

/// <summary>
/// Cuts an image with the Coordinator's chunker and builds its manifest in one read: chunk ids, the
/// whole-image SHA-256, and each chunk's offset (so a pusher can read back just the chunks the store
/// lacks). The reader only cuts (the chunker's rolling hash is sequential by nature) and copies chunks
/// back to back into ~1 MiB batches; each batch's chunk ids are hashed on the thread pool while one task
/// feeds the whole-image SHA-256 in order, so the three passes over the bytes run on separate cores
/// instead of one after another. Constant memory (a fixed ring of batches). Used by every client of the
/// push protocol (msdctl, the agent's snapshots).
/// </summary>
public static class ManifestBuilder
{
    private const int BatchBytes = 1024 * 1024;
    private const int BatchesInFlight = 6;

    public static async Task<(ImageManifest Manifest, long[] Offsets)> BuildAsync(Stream source, Action<long>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(source);
        var chunker = new ContentChunker(ChunkerParameters.Default);
        var capacity = BatchBytes + chunker.Parameters.MaxSize;
        using var ring = new ChunkBatchRing(BatchesInFlight + 1, capacity);
        // Batches in image order; each is released to the reader after the whole-image hash and its ids are done.
        var ordered = Channel.CreateBounded<ChunkBatch>(new BoundedChannelOptions(BatchesInFlight) { SingleReader = true, SingleWriter = true });
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var whole = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var chunks = new List<ManifestChunk>();
        var offsets = new List<long>();
        long position = 0;

        var collector = Task.Run(async () =>
        {
            await foreach (var batch in ordered.Reader.ReadAllAsync(cancel.Token))
            {
                whole.AppendData(batch.Buffer, 0, batch.Used);
                var ids = await batch.Ids!;
                for (var i = 0; i < ids.Length; i++)
                    chunks.Add(new ManifestChunk { Id = ids[i], Length = batch.Lengths[i] });
                ring.Release(batch);
            }
        }, cancel.Token);

        ChunkBatch? current = null;
        async Task SendAsync(ChunkBatch batch)
        {
            batch.Holders = 1; // the collector
            batch.StartHashingIds();
            await ordered.Writer.WriteAsync(batch, cancel.Token).ConfigureAwait(false);
        }
        try
        {
            await foreach (var chunk in StreamChunker.ReadChunksAsync(source, chunker, cancel.Token).ConfigureAwait(false))
            {
                if (current is not null && current.Used + chunk.Length > BatchBytes)
                {
                    await SendAsync(current).ConfigureAwait(false);
                    current = null;
                    progress?.Invoke(position);
                }
                current ??= await ring.TakeAsync(cancel.Token).ConfigureAwait(false);
                current.Add(chunk.Span);
                offsets.Add(position);
                position += chunk.Length;
            }
            if (current is not null)
                await SendAsync(current).ConfigureAwait(false);
            ordered.Writer.Complete();
            await collector.ConfigureAwait(false);
        }
        catch
        {
            await cancel.CancelAsync().ConfigureAwait(false);
            ordered.Writer.TryComplete();
            await collector.ContinueWith(_ => { }, TaskScheduler.Default).ConfigureAwait(false);
            throw;
        }
        progress?.Invoke(position);
        return (new ImageManifest { Size = position, Sha256 = whole.GetHashAndReset(), Chunker = ChunkerParameters.Default, Chunks = chunks }, offsets.ToArray());
    }
}
