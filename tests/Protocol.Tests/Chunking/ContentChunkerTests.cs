using MsdFleet.Protocol.Chunking;

namespace MsdFleet.Protocol.Tests.Chunking;

public class ContentChunkerTests
{
    private static readonly ContentChunker Chunker = new(ChunkerParameters.Default);

    private static byte[] RandomBytes(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    private static async Task<List<int>> LengthsAsync(Stream stream)
    {
        var lengths = new List<int>();
        await foreach (var chunk in StreamChunker.ReadChunksAsync(stream, Chunker))
            lengths.Add(chunk.Length);
        return lengths;
    }

    [Fact]
    public async Task ReadChunks_RandomData_SizesWithinBoundsAndCoverEveryByte()
    {
        var data = RandomBytes(8 * 1024 * 1024 + 123, 1);
        var lengths = await LengthsAsync(new MemoryStream(data));
        Assert.Equal(data.Length, lengths.Sum());
        Assert.All(lengths[..^1], l => Assert.InRange(l, ChunkerParameters.Default.MinSize + 1, ChunkerParameters.Default.MaxSize));
        var average = lengths.Average();
        Assert.InRange(average, 32 * 1024, 128 * 1024); // normalized chunking keeps sizes near 64 KiB
    }

    [Fact]
    public async Task ReadChunks_SameBytesDifferentReadSizes_SameCutPoints()
    {
        var data = RandomBytes(3 * 1024 * 1024, 2);
        var whole = await LengthsAsync(new MemoryStream(data));
        var trickled = await LengthsAsync(new TrickleStream(data, 4093));
        Assert.Equal(whole, trickled);
    }

    [Fact]
    public async Task ReadChunks_InsertionNearStart_LaterChunksUnchanged()
    {
        var data = RandomBytes(4 * 1024 * 1024, 3);
        var edited = data[..1000].Concat(RandomBytes(777, 4)).Concat(data[1000..]).ToArray();
        var before = await HashesAsync(data);
        var after = await HashesAsync(edited);
        var shared = before.Intersect(after).Count();
        Assert.True(shared >= before.Count - 3, $"only {shared} of {before.Count} chunks survived a 777-byte insertion");
    }

    [Fact]
    public async Task ReadChunks_EmptyStream_NoChunks()
    {
        Assert.Empty(await LengthsAsync(new MemoryStream()));
    }

    [Fact]
    public async Task ReadChunks_AllZeros_CutsAtMaxSize()
    {
        var lengths = await LengthsAsync(new MemoryStream(new byte[1024 * 1024]));
        Assert.All(lengths, l => Assert.Equal(ChunkerParameters.Default.MaxSize, l));
    }

    [Fact]
    public void NextChunkLength_NonFinalShortInput_Throws()
    {
        Assert.Throws<ArgumentException>(() => Chunker.NextChunkLength(new byte[1000], isFinal: false));
    }

    [Fact]
    public void Constructor_InvalidParameters_Throws()
    {
        Assert.Throws<ProtocolFormatException>(() => new ContentChunker(ChunkerParameters.Default with { AverageSize = 60000 }));
        Assert.Throws<ProtocolFormatException>(() => new ContentChunker(ChunkerParameters.Default with { Algorithm = "rabin" }));
        Assert.Throws<ProtocolFormatException>(() => new ContentChunker(ChunkerParameters.Default with { MinSize = 1 << 20 }));
    }

    [Fact]
    public async Task ReadChunks_FixedInput_PinnedCutPoints()
    {
        // Pins the gear table and masks: a change here silently breaks dedup against stored chunks.
        var lengths = await LengthsAsync(new MemoryStream(RandomBytes(1024 * 1024, 42)));
        Assert.Equal(PinnedLengths, lengths);
    }

    private static readonly List<int> PinnedLengths = [104902, 84234, 82954, 32652, 51156, 66555, 71869, 64703, 65812, 44296, 80545, 140436, 67543, 90919];

    private static async Task<List<string>> HashesAsync(byte[] data)
    {
        var hashes = new List<string>();
        await foreach (var chunk in StreamChunker.ReadChunksAsync(new MemoryStream(data), Chunker))
            hashes.Add(Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(chunk.Span)));
        return hashes;
    }

    /// <summary>Returns at most a few bytes per read, like a slow socket.</summary>
    private sealed class TrickleStream(byte[] data, int maxRead) : MemoryStream(data)
    {
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            base.ReadAsync(buffer[..Math.Min(buffer.Length, maxRead)], cancellationToken);
    }
}
