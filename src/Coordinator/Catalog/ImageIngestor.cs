using System.Security.Cryptography;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// Turns a byte stream into stored chunks plus a manifest, in constant memory: the stream is cut by
/// the content-defined chunker, each chunk hashed and written only if the store lacks it, while one
/// incremental SHA-256 covers the whole image. Nothing becomes visible in the catalog until the
/// manifest and every chunk are durable; an aborted upload leaves only unreferenced chunks.
/// </summary>
public sealed class ImageIngestor(IObjectStore store, ContentChunker chunker)
{
    public async Task<IngestResult> IngestAsync(Stream source, string? expectedSha256, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(source);
        using var wholeImage = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var chunks = new List<ManifestChunk>();
        long size = 0, newBytes = 0;
        await foreach (var chunk in StreamChunker.ReadChunksAsync(source, chunker, cancellationToken))
        {
            wholeImage.AppendData(chunk.Span);
            var entry = new ManifestChunk { Id = SHA256.HashData(chunk.Span), Length = chunk.Length };
            var key = ObjectKeys.Chunk(entry.IdHex);
            // A chunk file of the right length is the chunk: objects are renamed into place whole, and a
            // crash before the flush below can at worst leave an empty file, which fails this check.
            if (await store.GetSizeAsync(key, cancellationToken) != chunk.Length)
            {
                await store.PutAsync(key, chunk, cancellationToken);
                newBytes += chunk.Length;
            }
            chunks.Add(entry);
            size += chunk.Length;
        }
        var sha256 = wholeImage.GetHashAndReset();
        var sha256Hex = Convert.ToHexStringLower(sha256);
        if (expectedSha256 is not null && !string.Equals(expectedSha256, sha256Hex, StringComparison.OrdinalIgnoreCase))
        {
            throw new ApiException(StatusCodes.Status422UnprocessableEntity, "sha256-mismatch",
                $"The uploaded bytes have SHA-256 {sha256Hex}, not the expected {expectedSha256}; nothing was stored in the catalog.");
        }
        var manifest = new ImageManifest { Size = size, Sha256 = sha256, Chunker = chunker.Parameters, Chunks = chunks };
        var manifestBytes = manifest.ToBytes();
        var digest = ImageDigest.Compute(manifestBytes);
        await store.FlushAsync(cancellationToken); // chunks durable before anything references them
        await store.PutAsync(ObjectKeys.Manifest(digest), manifestBytes, cancellationToken);
        await store.FlushAsync(cancellationToken);
        return new IngestResult(digest, manifest, newBytes);
    }
}

public sealed record IngestResult(ImageDigest Digest, ImageManifest Manifest, long NewBytes);
