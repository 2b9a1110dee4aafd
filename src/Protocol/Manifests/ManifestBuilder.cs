using System.Security.Cryptography;
using MsdFleet.Protocol.Chunking;

namespace MsdFleet.Protocol.Manifests;

/// <summary>
/// Cuts an image with the Coordinator's chunker and builds its manifest in one pass: chunk ids, the
/// whole-image SHA-256, and each chunk's offset (so a pusher can read back just the chunks the store
/// lacks). Constant memory. Used by every client of the push protocol (msdctl, the agent's snapshots).
/// </summary>
public static class ManifestBuilder
{
    public static async Task<(ImageManifest Manifest, long[] Offsets)> BuildAsync(Stream source, Action<long>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(source);
        var chunker = new ContentChunker(ChunkerParameters.Default);
        var chunks = new List<ManifestChunk>();
        var offsets = new List<long>();
        using var whole = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long position = 0;
        await foreach (var chunk in StreamChunker.ReadChunksAsync(source, chunker, cancellationToken).ConfigureAwait(false))
        {
            whole.AppendData(chunk.Span);
            chunks.Add(new ManifestChunk { Id = SHA256.HashData(chunk.Span), Length = chunk.Length });
            offsets.Add(position);
            position += chunk.Length;
            if (chunks.Count % 64 == 0)
                progress?.Invoke(position);
        }
        progress?.Invoke(position);
        return (new ImageManifest { Size = position, Sha256 = whole.GetHashAndReset(), Chunker = ChunkerParameters.Default, Chunks = chunks }, offsets.ToArray());
    }
}
