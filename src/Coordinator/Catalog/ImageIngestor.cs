using System.Security.Cryptography;
using System.Threading.Channels;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// Turns a byte stream into stored chunks plus a manifest, in constant memory. The reader cuts the
/// stream with the content-defined chunker, feeds the whole-image SHA-256 (which must see bytes in
/// order) and starts one hashing task per chunk on the thread pool; an ordered, bounded channel of those
/// tasks lets hashing use every core while the pack writer still receives chunks in image order (so an
/// image's chunks sit contiguously in packs and agents fetch long runs with one request). Nothing
/// becomes visible in the catalog until the manifest and every chunk are durable; an aborted upload
/// leaves only unreferenced packs that GC reclaims. Callers hold a shared <see cref="StoreGate"/> lease
/// from before the ingest until the catalog entry is committed: in between, the new manifest is
/// referenced by nothing, and GC must not run.
/// Chunk buffers come from a fixed ring owned by the upload (not the shared pool, which keeps arrays
/// per core when one thread rents and another returns), so memory per upload is a known constant.
/// </summary>
public sealed class ImageIngestor(ChunkStore chunks, ContentChunker chunker, MediaDetector media)
{
    private const int InFlightChunks = 32;

    public async Task<IngestResult> IngestAsync(Stream source, string? expectedSha256, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(source);
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var channel = Channel.CreateBounded<Task<Hashed>>(new BoundedChannelOptions(InFlightChunks) { SingleWriter = true, SingleReader = true });
        var free = Channel.CreateBounded<byte[]>(InFlightChunks + 2);
        for (var i = 0; i < InFlightChunks + 2; i++)
            free.Writer.TryWrite(new byte[chunker.Parameters.MaxSize]);
        await using var writer = new PackWriter(chunks);
        var entries = new List<ManifestChunk>();
        var probe = new MediaProbe();

        var appender = Task.Run(async () =>
        {
            await foreach (var pending in channel.Reader.ReadAllAsync(cancel.Token))
            {
                var hashed = await pending;
                try
                {
                    await writer.AddAsync(hashed.Id, hashed.Buffer.AsMemory(0, hashed.Length), cancel.Token);
                    entries.Add(new ManifestChunk { Id = hashed.Id, Length = hashed.Length });
                }
                finally
                {
                    free.Writer.TryWrite(hashed.Buffer);
                }
            }
            await writer.CompleteAsync(cancel.Token);
        }, cancel.Token);

        byte[] sha256;
        long size = 0;
        try
        {
            using var wholeImage = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            await foreach (var chunk in StreamChunker.ReadChunksAsync(source, chunker, cancel.Token))
            {
                wholeImage.AppendData(chunk.Span);
                probe.Observe(size, chunk.Span);
                var buffer = await free.Reader.ReadAsync(cancel.Token);
                chunk.CopyTo(buffer);
                var length = chunk.Length;
                await channel.Writer.WriteAsync(Task.Run(() => new Hashed(SHA256.HashData(buffer.AsSpan(0, length)), buffer, length)), cancel.Token);
                size += length;
            }
            channel.Writer.Complete();
            await appender;
            sha256 = wholeImage.GetHashAndReset();
        }
        catch
        {
            await cancel.CancelAsync();
            channel.Writer.TryComplete();
            await appender.ContinueWith(_ => { }, TaskScheduler.Default);
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

    private readonly record struct Hashed(byte[] Id, byte[] Buffer, int Length);
}

public sealed record IngestResult(ImageDigest Digest, ImageManifest Manifest, long NewBytes, MediaInfo Media);
