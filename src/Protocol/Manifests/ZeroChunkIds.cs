using System.Security.Cryptography;

namespace MsdFleet.Protocol.Manifests;

/// <summary>
/// The SHA-256 of an all-zero chunk of each length a manifest uses, so a reader can tell which chunks are
/// zeros (holes, not downloads) by id alone. A content-defined chunker gives nearly every chunk its own
/// length, so hashing a fresh buffer of zeros per length would hash the whole image's size again (2 GiB of
/// zeros for a 2 GiB image: seconds before a pull could start). Zeros are instead fed once, in length
/// order, into one incremental hash, and the digest is read off at each length: the work is one
/// <c>MaxSize</c> of zeros plus one final block per distinct length.
/// </summary>
public sealed class ZeroChunkIds
{
    private readonly Dictionary<int, byte[]> _ids;

    private ZeroChunkIds(Dictionary<int, byte[]> ids) => _ids = ids;

    public static ZeroChunkIds For(IEnumerable<ManifestChunk> chunks)
    {
        ArgumentNullException.ThrowIfNull(chunks);
        var lengths = chunks.Select(c => c.Length).Where(l => l > 0).Distinct().Order().ToArray();
        var ids = new Dictionary<int, byte[]>(lengths.Length);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Span<byte> zeros = stackalloc byte[4096];
        zeros.Clear();
        var fed = 0;
        foreach (var length in lengths)
        {
            while (fed < length)
            {
                var n = Math.Min(zeros.Length, length - fed);
                sha.AppendData(zeros[..n]);
                fed += n;
            }
            ids[length] = sha.GetCurrentHash();
        }
        return new ZeroChunkIds(ids);
    }

    /// <summary>Whether <paramref name="chunk"/>'s id is that of <c>chunk.Length</c> zero bytes.</summary>
    public bool IsZero(ManifestChunk chunk)
    {
        ArgumentNullException.ThrowIfNull(chunk);
        return _ids.TryGetValue(chunk.Length, out var id) && chunk.Id.AsSpan().SequenceEqual(id);
    }
}
