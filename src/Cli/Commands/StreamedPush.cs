using System.Buffers.Binary;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using MsdFleet.Protocol.Chunking;

namespace MsdFleet.Cli.Commands;

/// <summary>
/// A streamed push (<c>POST /api/v1/uploads?streaming=true</c>): the file is read once. The reader cuts it into
/// ~16 MiB parts (one pack each on the Coordinator); each part's chunk ids are hashed on the thread pool and the
/// whole-image SHA-256 on its own task, while the sender declares finished parts in order
/// (<c>POST …/parts/{n}</c>, answered with the chunks the store lacks) and sends those chunks from the part's
/// own buffer. So sending starts after the first 16 MiB instead of after the whole file, nothing is read twice,
/// and the Coordinator sees the chunks in image order (it hashes the whole image as they arrive). Memory: a
/// ring of <see cref="PartsInFlight"/> part buffers and one request body, whatever the file size.
/// </summary>
internal sealed class StreamedPush(CoordinatorClient client, Throttle throttle, Action<long>? read, Action<long, bool>? handled)
{
    private const int PartBytes = 16 * 1024 * 1024;
    private const int PartsInFlight = 3;

    /// <summary>Below the Coordinator's 256 MiB limit per chunks request.</summary>
    private const long MaxRequestBytes = 192L * 1024 * 1024;

    public long Size { get; private set; }
    public long SentBytes { get; private set; }
    public int Chunks { get; private set; }
    public string Sha256 { get; private set; } = "";
    public TimeSpan CutDone { get; private set; }
    public TimeSpan SendDone { get; private set; }

    public async Task<JsonNode?> RunAsync(string path, string name, bool replace, System.Diagnostics.Stopwatch clock, CancellationToken ct)
    {
        var created = await client.SendJsonAsync(HttpMethod.Post, "api/v1/uploads?streaming=true", null, ct);
        var uploadId = created!["uploadId"]!.GetValue<string>();
        var max = ChunkerParameters.Default.MaxSize;
        // Not from the shared pool: a 16.25 MiB rent would round up to a 32 MiB array.
        using var ring = new ChunkBatchRing(PartsInFlight, PartBytes + max, pooled: false);
        var toSend = Channel.CreateBounded<ChunkBatch>(new BoundedChannelOptions(PartsInFlight) { SingleReader = true, SingleWriter = true });
        var toHash = Channel.CreateBounded<ChunkBatch>(new BoundedChannelOptions(PartsInFlight) { SingleReader = true, SingleWriter = true });
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(ct);

        using var whole = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var hasher = Task.Run(async () =>
        {
            await foreach (var part in toHash.Reader.ReadAllAsync(cancel.Token))
            {
                whole.AppendData(part.Buffer, 0, part.Used);
                ring.Release(part);
            }
        }, cancel.Token);

        var reader = Task.Run(async () =>
        {
            try
            {
                await using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 0, FileOptions.SequentialScan | FileOptions.Asynchronous);
                var chunker = new ContentChunker(ChunkerParameters.Default);
                ChunkBatch? current = null;
                var number = 0;
                long position = 0;
                async Task FinishAsync(ChunkBatch part)
                {
                    part.Number = number++;
                    part.Holders = 2;
                    part.StartHashingIds();
                    await toHash.Writer.WriteAsync(part, cancel.Token);
                    await toSend.Writer.WriteAsync(part, cancel.Token);
                    read?.Invoke(position);
                }
                await foreach (var chunk in StreamChunker.ReadChunksAsync(file, chunker, cancel.Token))
                {
                    if (current is not null && current.Used + chunk.Length > PartBytes)
                    {
                        await FinishAsync(current);
                        current = null;
                    }
                    current ??= await ring.TakeAsync(cancel.Token);
                    current.Add(chunk.Span);
                    position += chunk.Length;
                }
                if (current is not null)
                    await FinishAsync(current);
                Size = position;
                CutDone = clock.Elapsed;
                toHash.Writer.Complete();
                toSend.Writer.Complete();
            }
            catch (Exception ex)
            {
                toHash.Writer.TryComplete(ex);
                toSend.Writer.TryComplete(ex);
                throw;
            }
        }, cancel.Token);

        // Declaring runs ahead of sending: part n+1 is declared (and answered) while part n's chunks are on the wire.
        var declared = Channel.CreateBounded<(ChunkBatch Part, HashSet<int> Missing)>(new BoundedChannelOptions(PartsInFlight) { SingleReader = true, SingleWriter = true });
        var declarer = Task.Run(async () =>
        {
            try
            {
                await foreach (var part in toSend.Reader.ReadAllAsync(cancel.Token))
                {
                    var ids = await part.Ids!;
                    var entries = new byte[ids.Length * 36];
                    for (var i = 0; i < ids.Length; i++)
                    {
                        ids[i].CopyTo(entries, i * 36);
                        BinaryPrimitives.WriteInt32BigEndian(entries.AsSpan(i * 36 + 32), part.Lengths[i]);
                    }
                    using var declare = new HttpRequestMessage(HttpMethod.Post, $"api/v1/uploads/{uploadId}/parts/{part.Number}") { Content = new ByteArrayContent(entries) };
                    using var answer = await client.SendAsync(declare, cancel.Token);
                    var missing = (await answer.Content.ReadFromJsonAsync<JsonObject>(cancel.Token))!["missing"]!.AsArray().Select(m => m!.GetValue<int>()).ToHashSet();
                    await declared.Writer.WriteAsync((part, missing), cancel.Token);
                }
                declared.Writer.Complete();
            }
            catch (Exception ex)
            {
                declared.Writer.TryComplete(ex);
                throw;
            }
        }, cancel.Token);

        // The chunks go out as a few long requests (up to MaxRequestBytes each, chunked encoding) fed part after part
        // as parts are declared, instead of one request per part: the Coordinator verifies and stores frames as they
        // stream in and makes them durable once per request, so no round trip or flush sits between parts.
        var parts = 0;
        try
        {
            while (await declared.Reader.WaitToReadAsync(cancel.Token))
            {
                using var send = new HttpRequestMessage(HttpMethod.Post, $"api/v1/uploads/{uploadId}/chunks")
                {
                    Content = new FramesContent(declared.Reader, MaxRequestBytes, throttle, (part, bytes) =>
                    {
                        SentBytes += bytes;
                        Chunks += part.Lengths.Count;
                        parts++;
                        handled?.Invoke(part.Used, bytes > 0);
                        ring.Release(part);
                    }),
                };
                (await client.SendAsync(send, cancel.Token)).Dispose();
            }
            await reader;
            await hasher;
            await declarer;
        }
        catch
        {
            await cancel.CancelAsync();
            await Task.WhenAll(reader, hasher, declarer).ContinueWith(_ => { }, TaskScheduler.Default);
            throw;
        }
        SendDone = clock.Elapsed;
        Sha256 = Convert.ToHexStringLower(whole.GetHashAndReset());
        return await client.SendJsonAsync(HttpMethod.Post, $"api/v1/uploads/{uploadId}/commit",
            new { name, replace, parts, size = Size, sha256 = Sha256 }, ct);
    }

    /// <summary>
    /// A chunks request body written while it is sent: the frames (4-byte length, bytes) of each declared part's
    /// missing chunks, staged through one 1 MiB buffer so the wire sees large writes, until the request holds
    /// <c>limit</c> bytes or no part is left. Each part is handed to <c>done</c> once its bytes are written.
    /// </summary>
    private sealed class FramesContent(ChannelReader<(ChunkBatch Part, HashSet<int> Missing)> declared, long limit, Throttle throttle, Action<ChunkBatch, long> done)
        : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context, CancellationToken cancellationToken)
        {
            var stage = new byte[1024 * 1024 + ChunkerParameters.Default.MaxSize + ChunkFrames.HeaderBytes];
            var used = 0;
            long written = 0;
            async Task FlushAsync()
            {
                await throttle.WaitAsync(used, cancellationToken);
                await stream.WriteAsync(stage.AsMemory(0, used), cancellationToken);
                written += used;
                used = 0;
            }
            while (written < limit)
            {
                if (!declared.TryRead(out var item))
                {
                    if (!await declared.WaitToReadAsync(cancellationToken))
                        break;
                    continue;
                }
                var (part, missing) = item;
                var offset = 0;
                long bytes = 0;
                for (var i = 0; i < part.Lengths.Count; i++)
                {
                    var length = part.Lengths[i];
                    if (missing.Contains(i))
                    {
                        ChunkFrames.WriteHeader(stage.AsSpan(used), length);
                        part.Buffer.AsSpan(offset, length).CopyTo(stage.AsSpan(used + ChunkFrames.HeaderBytes));
                        used += ChunkFrames.HeaderBytes + length;
                        bytes += length;
                        if (used >= 1024 * 1024)
                            await FlushAsync();
                    }
                    offset += length;
                }
                if (used > 0)
                    await FlushAsync();
                done(part, bytes);
            }
        }

        protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }
}
