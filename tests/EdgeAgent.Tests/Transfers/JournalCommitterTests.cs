using System.Security.Cryptography;
using MsdFleet.EdgeAgent.Transfers;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.EdgeAgent.Tests.Transfers;

/// <summary>The committer batches journal commits in the background while writers keep calling Written.</summary>
public class JournalCommitterTests : IDisposable
{
    private const int Chunks = 2000;
    private readonly TempDirectory _dir = new();
    private readonly ImageManifest _manifest = new()
    {
        Size = Chunks * 100L,
        Sha256 = new byte[32],
        Chunker = ChunkerParameters.Default,
        Chunks = Enumerable.Range(0, Chunks).Select(i => new ManifestChunk { Id = SHA256.HashData(BitConverter.GetBytes(i)), Length = 100 }).ToList(),
    };

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task ManyConcurrentWriters_EveryChunkJournaledOnceAfterFlush_AndBackgroundCommitsHappenedOnTheWay()
    {
        var digest = ImageDigest.Compute(_manifest.ToBytes());
        var journalPath = Path.Combine(_dir.Path, "x.journal");
        using var handle = File.OpenHandle(Path.Combine(_dir.Path, "x.part"), FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, FileOptions.None, _manifest.Size);
        int committedBeforeFlush;
        using (var journal = PullJournal.Open(journalPath, digest, _manifest))
        {
            // Commit every 10 chunks: about 200 commits, most of them while the writers run.
            var committer = new JournalCommitter(handle, journal, 1000);
            await Parallel.ForEachAsync(Enumerable.Range(0, Chunks), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (i, ct) =>
            {
                await RandomAccess.WriteAsync(handle, new byte[100], i * 100L, ct);
                committer.Written(i, 100);
            });
            committer.WaitIdle();
            committedBeforeFlush = journal.Done.Count;
            committer.Flush();
            Assert.All(Enumerable.Range(0, Chunks), i => Assert.True(committer.IsWritten(i)));
            Assert.Equal(Chunks, committer.FirstUnwritten(0, Chunks - 1));
        }
        Assert.InRange(committedBeforeFlush, 1, Chunks);
        using var reopened = PullJournal.Open(journalPath, digest, _manifest);
        Assert.Equal(Enumerable.Range(0, Chunks), reopened.Done.Order());
        Assert.Equal(40 + Chunks * 12L, new FileInfo(journalPath).Length); // a 40-byte header, then one 12-byte record per chunk: none twice
    }

    [Fact]
    public void ChunksJournaledByAnEarlierRun_CountAsWritten()
    {
        var digest = ImageDigest.Compute(_manifest.ToBytes());
        var journalPath = Path.Combine(_dir.Path, "y.journal");
        using var handle = File.OpenHandle(Path.Combine(_dir.Path, "y.part"), FileMode.CreateNew, FileAccess.ReadWrite);
        using (var journal = PullJournal.Open(journalPath, digest, _manifest))
            journal.Commit([3, 4]);
        using var again = PullJournal.Open(journalPath, digest, _manifest);
        var committer = new JournalCommitter(handle, again, 1 << 20);
        Assert.True(committer.IsWritten(3));
        Assert.False(committer.IsWritten(5));
        Assert.Equal(5, committer.FirstUnwritten(3, 9));
        Assert.True(committer.IsWritten(4));
    }
}
