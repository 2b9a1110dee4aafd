using System.Security.Cryptography;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Protocol.Tests.Manifests;

public class ImageManifestTests
{
    private static ImageManifest Sample(params int[] lengths) => new()
    {
        Size = lengths.Sum(),
        Sha256 = new byte[32],
        Chunker = ChunkerParameters.Default,
        Chunks = lengths.Select((l, i) => new ManifestChunk { Id = SHA256.HashData(BitConverter.GetBytes(i)), Length = l }).ToList(),
    };

    [Fact]
    public void Parse_RoundTrip_PreservesEverything()
    {
        var manifest = Sample(100, 200, 300);
        var parsed = ImageManifest.Parse(manifest.ToBytes());
        Assert.Equal(600, parsed.Size);
        Assert.Equal(manifest.Chunks.Select(c => c.IdHex), parsed.Chunks.Select(c => c.IdHex));
        Assert.Equal(manifest.ToBytes(), parsed.ToBytes());
    }

    [Fact]
    public void ComputeOffsets_ReturnsStartsAndSizeSentinel()
    {
        Assert.Equal([0L, 100, 300, 600], Sample(100, 200, 300).ComputeOffsets());
    }

    [Fact]
    public void Parse_SizeDisagreesWithChunks_Rejected()
    {
        var bad = Sample(100, 200) with { Size = 301 };
        var ex = Assert.Throws<ProtocolFormatException>(() => ImageManifest.Parse(bad.ToBytes()));
        Assert.Contains("add up", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_ChunkLongerThanMax_Rejected()
    {
        var bad = Sample(ChunkerParameters.Default.MaxSize + 1);
        Assert.Throws<ProtocolFormatException>(() => ImageManifest.Parse(bad.ToBytes()));
    }

    [Fact]
    public void Parse_ShortChunkId_Rejected()
    {
        var bad = Sample(10) with { Chunks = [new ManifestChunk { Id = new byte[31], Length = 10 }] };
        Assert.Throws<ProtocolFormatException>(() => ImageManifest.Parse(bad.ToBytes()));
    }

    [Fact]
    public void Parse_UnknownFormat_Rejected()
    {
        var bad = Sample(10) with { Format = 2 };
        Assert.Throws<ProtocolFormatException>(() => ImageManifest.Parse(bad.ToBytes()));
    }

    [Theory]
    [InlineData("sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", true)]
    [InlineData("sha256:" + "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", false)]
    [InlineData("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", false)]
    [InlineData("sha256:0123", false)]
    [InlineData("sha512:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", false)]
    [InlineData("", false)]
    public void ImageDigest_TryParse_AcceptsOnlyCanonicalForm(string value, bool valid)
    {
        Assert.Equal(valid, ImageDigest.TryParse(value, out var digest));
        if (valid)
            Assert.Equal(value, digest.ToString());
    }
}
