using System.Threading.Channels;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Chunking;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// Receives a push's chunk frames (4-byte big-endian length, then the chunk) the way <see cref="ImageIngestor"/>
/// receives an image: the request's reader copies frames back to back into ~1 MiB batches; each batch's chunk ids
/// are hashed on the thread pool; one task checks them against the push's manifest and adds them, in arrival order,
/// to the pack writer; another feeds the push's in-order whole-image hash (<see cref="InOrderHash"/>). So one long
/// request uses every core, not one. A batch's buffer is reused once both in-order consumers are done with it.
/// </summary>
internal static class ChunkFrameReceiver
{
    private const int BatchBytes = 1024 * 1024;
    private const int BatchesInFlight = 4;

    public static async Task<int> ReceiveAsync(Stream body, PushSession session, PushSessionStore sessions, PackWriter writer, CancellationToken cancellationToken)
    {
        var max = session.Manifest.Chunker.MaxSize;
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var ring = new ChunkBatchRing(BatchesInFlight + 1, BatchBytes + max);
        var toAppend = Channel.CreateBounded<ChunkBatch>(new BoundedChannelOptions(BatchesInFlight) { SingleReader = true, SingleWriter = true });
        var toHash = Channel.CreateBounded<ChunkBatch>(new BoundedChannelOptions(BatchesInFlight) { SingleReader = true, SingleWriter = true });

        var received = 0;
        var appender = Task.Run(async () =>
        {
            try
            {
                await foreach (var batch in toAppend.Reader.ReadAllAsync(cancel.Token))
                {
                    var ids = await batch.Ids!;
                    var offset = 0;
                    for (var i = 0; i < ids.Length; i++)
                    {
                        if (!session.Wants(ids[i]) && session.Streaming)
                            await sessions.RefreshPartsAsync(session, cancel.Token); // declared through another replica
                        if (!session.Wants(ids[i]))
                            throw ApiException.BadRequest("unexpected-chunk", $"Chunk {Convert.ToHexStringLower(ids[i])} is not in this upload's manifest.");
                        await writer.AddAsync(ids[i], batch.Buffer.AsMemory(offset, batch.Lengths[i]), cancel.Token);
                        offset += batch.Lengths[i];
                        received++;
                    }
                    await toHash.Writer.WriteAsync(batch, cancel.Token); // only chunks that passed the check reach the whole-image hash
                    ring.Release(batch);
                }
                toHash.Writer.TryComplete();
            }
            catch (Exception ex)
            {
                toHash.Writer.TryComplete(ex);
                throw;
            }
        }, cancel.Token);
        var hasher = Task.Run(async () =>
        {
            await foreach (var batch in toHash.Reader.ReadAllAsync(cancel.Token))
            {
                var ids = await batch.Ids!;
                var offset = 0;
                for (var i = 0; i < ids.Length; i++)
                {
                    session.WholeImage.Offer(session.OrderedChunks, ids[i], batch.Buffer.AsSpan(offset, batch.Lengths[i]));
                    offset += batch.Lengths[i];
                }
                ring.Release(batch);
            }
        }, cancel.Token);
        // A consumer that fails stops the reader too, which may be waiting for room in a full channel.
        foreach (var consumer in (Task[])[appender, hasher])
            _ = consumer.ContinueWith(_ => cancel.Cancel(), CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);

        try
        {
            var header = new byte[ChunkFrames.HeaderBytes];
            ChunkBatch? current = null;
            while (true)
            {
                var got = await body.ReadAtLeastAsync(header, ChunkFrames.HeaderBytes, throwOnEndOfStream: false, cancel.Token);
                if (got == 0)
                    break;
                if (got < ChunkFrames.HeaderBytes)
                    throw ApiException.BadRequest("invalid-frame", "The body ends inside a frame header.");
                var length = ChunkFrames.ReadHeader(header);
                if (length <= 0 || length > max)
                    throw ApiException.BadRequest("invalid-frame", $"Frame length {length} is outside 1..{max}.");
                if (current is not null && current.Used + length > BatchBytes)
                {
                    await SendAsync(current);
                    current = null;
                }
                current ??= await ring.TakeAsync(cancel.Token);
                if (await body.ReadAtLeastAsync(current.Buffer.AsMemory(current.Used, length), length, throwOnEndOfStream: false, cancel.Token) < length)
                    throw ApiException.BadRequest("invalid-frame", "The body ends inside a chunk.");
                current.Used += length;
                current.Lengths.Add(length);
            }
            if (current is not null)
                await SendAsync(current);
            toAppend.Writer.Complete();
            await appender;
            await hasher;
            return received;
        }
        catch (Exception ex)
        {
            await cancel.CancelAsync();
            toAppend.Writer.TryComplete();
            await Task.WhenAll(appender, hasher).ContinueWith(_ => { }, TaskScheduler.Default);
            // The first real failure, not the cancellation it caused elsewhere: a refused chunk is the client's 400.
            if (appender.Exception?.InnerException is ApiException refused && ex is not ApiException)
                throw refused;
            throw;
        }

        async Task SendAsync(ChunkBatch batch)
        {
            batch.Holders = 2;
            batch.StartHashingIds();
            await toAppend.Writer.WriteAsync(batch, cancel.Token);
        }
    }
}
