using System.Security.Cryptography;
using MsdFleet.Coordinator.Catalog;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Coordinator.Tests.Catalog;

public sealed class InOrderHashTests
{
    private static (List<ManifestChunk> Chunks, byte[][] Data) Image(params byte[][] data) =>
        (data.Select(d => new ManifestChunk { Id = SHA256.HashData(d), Length = d.Length }).ToList(), data);

    [Fact]
    public void Offer_InOrder_HashesEveryByteOnce_AndRepeatsThatFollowDirectly()
    {
        byte[] a = [1, 2, 3], b = [4, 5], c = [6];
        var (chunks, _) = Image(a, b, b, c); // b twice in a row: sent once, hashed twice
        var hash = new InOrderHash();
        hash.Offer(chunks, chunks[0].Id, a);
        hash.Offer(chunks, chunks[1].Id, b);
        hash.Offer(chunks, chunks[3].Id, c);
        var (h, offset) = hash.Take()!.Value;
        Assert.Equal(8, offset);
        Assert.Equal(SHA256.HashData([.. a, .. b, .. b, .. c]), h.GetHashAndReset());
    }

    [Fact]
    public void Offer_OutOfOrder_StopsAtTheGap_AndTakeHandsOverOnce()
    {
        byte[] a = [1, 2, 3], b = [4, 5], c = [6];
        var (chunks, _) = Image(a, b, c);
        var hash = new InOrderHash();
        hash.Offer(chunks, chunks[0].Id, a);
        hash.Offer(chunks, chunks[2].Id, c); // overtook b: not hashed, the commit reads it back
        var taken = hash.Take();
        Assert.NotNull(taken);
        Assert.Equal(3, taken.Value.Offset);
        hash.Offer(chunks, chunks[1].Id, b); // after Take: ignored
        Assert.Null(hash.Take());
        taken.Value.Hash.AppendData([.. b, .. c]);
        Assert.Equal(SHA256.HashData([.. a, .. b, .. c]), taken.Value.Hash.GetHashAndReset());
    }
}
