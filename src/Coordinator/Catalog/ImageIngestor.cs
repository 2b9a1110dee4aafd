using System.Buffers;
using System.Security.Cryptography;
using System.Threading.Channels;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// Turns a byte stream into stored chunks plus a manifest, in constant memory. One reader cuts the
/// stream with the content-defined chunker and feeds the whole-image SHA-256 (which must see bytes in
/// order); workers on the other cores hash each chunk and write it only if the store lacks it. A
/// bounded channel caps memory at <see cref="InFlightChunks"/> chunks. Nothing becomes visible in the
/// catalog until the manifest and every chunk are durable; an aborted upload leaves only unreferenced chunks.
/// </summary>
public sealed class ImageIngestor(IObjectStore store, ContentChunker chunker)
{
    private const int InFlightChunks = 64;

    public async Task<IngestResult> IngestAsync(Stream source, string? expectedSha256, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(source);
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var channel = Channel.CreateBounded<Work>(new BoundedChannelOptions(InFlightChunks) { SingleWriter = true });
        var chunks = new List<ManifestChunk?>();
        var chunksLock = new Lock();
        long newBytes = 0;

        var workers = Enumerable.Range(0, Math.Max(2, Environment.ProcessorCount)).Select(_ => Task.Run(async () =>
        {
            await foreach (var work in channel.Reader.ReadAllAsync(cancel.Token))
            {
                try
                {
                    var data = work.Buffer.AsMemory(0, work.Length);
                    var entry = new ManifestChunk { Id = SHA256.HashData(data.Span), Length = work.Length };
                    var key = ObjectKeys.Chunk(entry.IdHex);
                    // A chunk file of the right length is the chunk: objects are renamed into place whole, and a
                    // crash before the flush below can at worst leave an empty file, which fails this check.
                    if (await store.GetSizeAsync(key, cancel.Token) != work.Length)
                    {
                        await store.PutAsync(key, data, cancel.Token);
                        Interlocked.Add(ref newBytes, work.Length);
                    }
                    lock (chunksLock)
                        chunks[work.Index] = entry;
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(work.Buffer);
                }
            }
        }, cancel.Token)).ToList();

        byte[] sha256;
        long size = 0;
        try
        {
            using var wholeImage = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var index = 0;
            await foreach (var chunk in StreamChunker.ReadChunksAsync(source, chunker, cancel.Token))
            {
                wholeImage.AppendData(chunk.Span);
                var buffer = ArrayPool<byte>.Shared.Rent(chunk.Length);
                chunk.CopyTo(buffer);
                lock (chunksLock)
                    chunks.Add(null);
                await channel.Writer.WriteAsync(new Work(index++, buffer, chunk.Length), cancel.Token);
                size += chunk.Length;
            }
            channel.Writer.Complete();
            await Task.WhenAll(workers);
            sha256 = wholeImage.GetHashAndReset();
        }
        catch
        {
            await cancel.CancelAsync();
            channel.Writer.TryComplete();
            await Task.WhenAll(workers).ContinueWith(_ => { }, TaskScheduler.Default);
            throw;
        }

        var sha256Hex = Convert.ToHexStringLower(sha256);
        if (expectedSha256 is not null && !string.Equals(expectedSha256, sha256Hex, StringComparison.OrdinalIgnoreCase))
        {
            throw new ApiException(StatusCodes.Status422UnprocessableEntity, "sha256-mismatch",
                $"The uploaded bytes have SHA-256 {sha256Hex}, not the expected {expectedSha256}; nothing was stored in the catalog.");
        }
        var manifest = new ImageManifest { Size = size, Sha256 = sha256, Chunker = chunker.Parameters, Chunks = chunks.Select(c => c!).ToList() };
        var manifestBytes = manifest.ToBytes();
        var digest = ImageDigest.Compute(manifestBytes);
        await store.FlushAsync(cancellationToken); // chunks durable before anything references them
        await store.PutAsync(ObjectKeys.Manifest(digest), manifestBytes, cancellationToken);
        await store.FlushAsync(cancellationToken);
        return new IngestResult(digest, manifest, newBytes);
    }

    private readonly record struct Work(int Index, byte[] Buffer, int Length);
}

public sealed record IngestResult(ImageDigest Digest, ImageManifest Manifest, long NewBytes);
