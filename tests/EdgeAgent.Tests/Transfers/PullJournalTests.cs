using System.Security.Cryptography;
using MsdFleet.EdgeAgent.Transfers;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.EdgeAgent.Tests.Transfers;

public class PullJournalTests : IDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly ImageManifest _manifest = new()
    {
        Size = 10 * 100,
        Sha256 = new byte[32],
        Chunker = ChunkerParameters.Default,
        Chunks = Enumerable.Range(0, 10).Select(i => new ManifestChunk { Id = SHA256.HashData(BitConverter.GetBytes(i)), Length = 100 }).ToList(),
    };
    private readonly ImageDigest _digest;
    private readonly string _path;

    public PullJournalTests()
    {
        _digest = ImageDigest.Compute(_manifest.ToBytes());
        _path = Path.Combine(_dir.Path, "x.journal");
    }

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Commit_ThenReopen_RemembersChunks()
    {
        using (var journal = PullJournal.Open(_path, _digest, _manifest))
            journal.Commit([0, 3, 7]);
        using var reopened = PullJournal.Open(_path, _digest, _manifest);
        Assert.Equal(new HashSet<int> { 0, 3, 7 }, reopened.Done.ToHashSet());
    }

    [Fact]
    public void Open_TornTail_DropsPartialRecordOnly()
    {
        using (var journal = PullJournal.Open(_path, _digest, _manifest))
            journal.Commit([1, 2]);
        using (var stream = new FileStream(_path, FileMode.Append))
            stream.Write([5, 0, 0, 0, 9, 9]); // half a record, as after a power cut
        using (var reopened = PullJournal.Open(_path, _digest, _manifest))
        {
            Assert.Equal(new HashSet<int> { 1, 2 }, reopened.Done.ToHashSet());
            reopened.Commit([4]); // appended after the cut, not after the garbage
        }
        using var third = PullJournal.Open(_path, _digest, _manifest);
        Assert.Equal(new HashSet<int> { 1, 2, 4 }, third.Done.ToHashSet());
    }

    [Fact]
    public void Open_CorruptRecord_StopsTrustingFromThere()
    {
        using (var journal = PullJournal.Open(_path, _digest, _manifest))
            journal.Commit([1, 2, 3]);
        var bytes = File.ReadAllBytes(_path);
        bytes[40 + 12 + 5] ^= 0xFF; // second record's check value
        File.WriteAllBytes(_path, bytes);
        using var reopened = PullJournal.Open(_path, _digest, _manifest);
        Assert.Equal(new HashSet<int> { 1 }, reopened.Done.ToHashSet());
    }

    [Fact]
    public void Open_JournalOfAnotherImage_StartsOver()
    {
        using (var journal = PullJournal.Open(_path, _digest, _manifest))
            journal.Commit([1, 2]);
        var other = ImageDigest.Parse("sha256:" + new string('c', 64));
        using var reopened = PullJournal.Open(_path, other, _manifest);
        Assert.Empty(reopened.Done);
    }

    [Fact]
    public void PlanRanges_MergesAdjacentMissingChunks()
    {
        var offsets = _manifest.ComputeOffsets();
        var contiguous = new ImageLayout { Sources = ["p"], Chunks = offsets[..^1].Select(o => new ChunkLocation { Source = 0, Offset = o }).ToList() };
        Assert.Equal([(0, 1), (4, 7), (9, 9)], RangePlanner.Plan(_manifest, contiguous, new HashSet<int> { 2, 3, 8 }));
        // Chunk 5 lives in another pack, chunk 7 elsewhere in the same one: runs break there.
        var scattered = new ImageLayout
        {
            Sources = ["p", "q"],
            Chunks = offsets[..^1].Select((o, i) => new ChunkLocation { Source = i == 5 ? 1 : 0, Offset = i == 7 ? 5000 : o }).ToList(),
        };
        Assert.Equal([(0, 1), (4, 4), (5, 5), (6, 6), (7, 7), (9, 9)], RangePlanner.Plan(_manifest, scattered, new HashSet<int> { 2, 3, 8 }));
    }
}
