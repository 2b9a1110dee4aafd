using MsdFleet.EdgeAgent.Transfers;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.EdgeAgent.Tests.Transfers;

public class RangePlannerTests
{
    private static (ImageManifest, ImageLayout) Contiguous(int chunks, int length)
    {
        var manifest = new ImageManifest
        {
            Size = (long)chunks * length, Sha256 = new byte[32], Chunker = ChunkerParameters.Default,
            Chunks = Enumerable.Range(0, chunks).Select(_ => new ManifestChunk { Id = new byte[32], Length = length }).ToList(),
        };
        var layout = new ImageLayout { Sources = ["s"], Chunks = Enumerable.Range(0, chunks).Select(i => new ChunkLocation { Source = 0, Offset = (long)i * length }).ToList() };
        return (manifest, layout);
    }

    [Fact]
    public void CappedPull_AsksForAboutASecondAtATime()
    {
        var (manifest, layout) = Contiguous(64, 64 * 1024); // 4 MiB
        Assert.Single(RangePlanner.Plan(manifest, layout, new HashSet<int>()));
        var capped = RangePlanner.Plan(manifest, layout, new HashSet<int>(), RangePlanner.RangeBytesFor(1024 * 1024));
        Assert.Equal(4, capped.Count);
        Assert.All(capped, r => Assert.Equal(16, r.Last - r.First + 1));
        Assert.Equal(RangePlanner.MinRangeBytes, RangePlanner.RangeBytesFor(1));
        Assert.Equal(RangePlanner.MaxRangeBytes, RangePlanner.RangeBytesFor(0));
    }
}
