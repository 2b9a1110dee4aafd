using System.Security.Cryptography;
using MsdFleet.EdgeAgent.Storage;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.EdgeAgent.Tests.Storage;

public sealed class WorkingCopyStoreTests : IDisposable
{
    private static readonly ImageDigest Base = ImageDigest.Parse("sha256:" + new string('a', 64));
    private readonly TempDirectory _dir = new();
    private readonly LocalImageStore _store;
    private readonly WorkingCopyStore _copies;

    public WorkingCopyStoreTests()
    {
        _store = new LocalImageStore(Path.Combine(_dir.Path, "storage"));
        _copies = new WorkingCopyStore(_store);
    }

    public void Dispose() => _dir.Dispose();

    private string BaseImage(int megabytes, bool holeInTheMiddle)
    {
        var path = _store.ImagePath(Base);
        using var file = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite);
        var data = new byte[1 << 20];
        for (var i = 0; i < megabytes; i++)
        {
            if (holeInTheMiddle && i > 0 && i < megabytes - 1)
                continue;
            new Random(i).NextBytes(data);
            RandomAccess.Write(file, data, (long)i << 20);
        }
        RandomAccess.SetLength(file, (long)megabytes << 20);
        return path;
    }

    [Fact]
    public async Task CreateAsync_CopyEqualsBase_IsClean_AndBaseUntouchedByWritesToTheCopy()
    {
        var basePath = BaseImage(4, holeInTheMiddle: true);
        var baseHash = SHA256.HashData(File.ReadAllBytes(basePath));
        var reported = new Recorder();
        await _copies.CreateAsync(0, Base, basePath, reported, CancellationToken.None);
        if (reported.Values.Count > 0) // a reflink clone reports nothing; a copy reports up to the data it copied
            Assert.Equal(reported.Values.Order(), reported.Values);

        var copy = _copies.Get(0)!;
        Assert.Equal(Base, copy.BaseDigest);
        Assert.False(copy.UnsavedWrites);
        Assert.Equal(baseHash, SHA256.HashData(File.ReadAllBytes(copy.Path)));
        // Holes stay holes: the copy holds about as much data as the base, not its full size.
        Assert.True(SparseRegions.DataBytes(copy.Path, copy.Size) <= SparseRegions.DataBytes(basePath, copy.Size));

        await using (var stream = new FileStream(copy.Path, FileMode.Open, FileAccess.Write))
        {
            stream.Position = 3 << 20;
            stream.Write("written by the server"u8);
        }
        File.SetLastWriteTimeUtc(copy.Path, DateTime.UtcNow.AddSeconds(1)); // as the kernel does on write, without depending on clock granularity
        Assert.True(_copies.Get(0)!.UnsavedWrites);
        Assert.Equal(baseHash, SHA256.HashData(File.ReadAllBytes(basePath)));
        Assert.Equal(0, _copies.DriveOfPath(copy.Path));
        Assert.Null(_copies.DriveOfPath(basePath));
    }

    [Fact]
    public async Task WriteRecordAsync_AfterSaveBack_MarksCopyCleanAgainstNewBase()
    {
        var basePath = BaseImage(1, holeInTheMiddle: false);
        await _copies.CreateAsync(2, Base, basePath, null, CancellationToken.None);
        File.SetLastWriteTimeUtc(_copies.ImagePath(2), DateTime.UtcNow.AddSeconds(5));
        Assert.True(_copies.Get(2)!.UnsavedWrites);
        var saved = ImageDigest.Parse("sha256:" + new string('b', 64));
        await _copies.WriteRecordAsync(2, saved, CancellationToken.None);
        var copy = _copies.Get(2)!;
        Assert.False(copy.UnsavedWrites);
        Assert.Equal(saved, copy.BaseDigest);
    }

    [Fact]
    public async Task RemoveLeftovers_RemovesHalfMadeCopies_KeepsFinishedOnesAndAttachedFiles()
    {
        var basePath = BaseImage(1, holeInTheMiddle: false);
        await _copies.CreateAsync(0, Base, basePath, null, CancellationToken.None);
        File.WriteAllText(Path.Combine(_copies.Folder, "drive1.tmp"), "killed while copying");
        File.WriteAllText(_copies.ImagePath(3), "renamed, record never written");
        File.WriteAllText(Path.Combine(_copies.Folder, "drive4.json"), "{}");
        File.WriteAllText(_copies.ImagePath(5), "no record but attached: never removed behind the server's back");

        var removed = _copies.RemoveLeftovers(path => path == _copies.ImagePath(5));

        Assert.Equal(["drive1.tmp", "drive3.img", "drive4.json"], removed.Order(StringComparer.Ordinal));
        Assert.NotNull(_copies.Get(0));
        Assert.True(File.Exists(_copies.ImagePath(5)));
    }

    [Fact]
    public async Task Discard_RemovesCopyAndRecord()
    {
        var basePath = BaseImage(1, holeInTheMiddle: false);
        await _copies.CreateAsync(1, Base, basePath, null, CancellationToken.None);
        _copies.Discard(1);
        Assert.Null(_copies.Get(1));
        Assert.Empty(Directory.EnumerateFiles(_copies.Folder));
        Assert.Equal(1 << 20, File.ReadAllBytes(basePath).Length);
    }

    private sealed class Recorder : IProgress<long>
    {
        public List<long> Values { get; } = [];
        public void Report(long value) => Values.Add(value);
    }
}
