using System.Security.Cryptography;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Protocol.Tests.Manifests;

public class ZeroChunkIdsTests
{
    [Fact]
    public void IsZero_AgreesWithHashingZerosOfEachLength()
    {
        // Lengths out of order, repeated, around the 4 KiB feed size, and a chunker's maximum.
        int[] lengths = [65536, 1, 4095, 4096, 4097, 12345, 1, 262144, 8191, 65536];
        var zeroChunks = lengths.Select(l => new ManifestChunk { Id = SHA256.HashData(new byte[l]), Length = l }).ToList();
        var dataChunks = lengths.Select(l =>
        {
            var data = new byte[l];
            data[^1] = 1;
            return new ManifestChunk { Id = SHA256.HashData(data), Length = l };
        }).ToList();
        var zeros = ZeroChunkIds.For(zeroChunks.Concat(dataChunks));

        Assert.All(zeroChunks, c => Assert.True(zeros.IsZero(c), $"zero chunk of {c.Length} bytes"));
        Assert.All(dataChunks, c => Assert.False(zeros.IsZero(c), $"data chunk of {c.Length} bytes"));
    }

    [Fact]
    public void IsZero_ZeroIdOfAnotherLength_IsNotZero()
    {
        var four = new ManifestChunk { Id = SHA256.HashData(new byte[4]), Length = 4 };
        var claimsFive = new ManifestChunk { Id = four.Id, Length = 5 };
        var zeros = ZeroChunkIds.For([four, claimsFive]);

        Assert.True(zeros.IsZero(four));
        Assert.False(zeros.IsZero(claimsFive));
    }
}
