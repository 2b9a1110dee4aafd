using System.Numerics;

namespace MsdFleet.Protocol.Chunking;

/// <summary>
/// FastCDC (2020 variant): a gear rolling hash picks cut points that depend only on content, so an
/// insertion early in an image shifts only the chunks around it. Normalized chunking uses a stricter
/// mask before the average size and a looser one after it, which narrows the size distribution.
/// The cut decision looks at no more than <see cref="ChunkerParameters.MaxSize"/> bytes, so the result
/// does not depend on how the caller buffers the stream.
/// </summary>
public sealed class ContentChunker
{
    private readonly ulong[] _gear;
    private readonly ulong _maskSmall;
    private readonly ulong _maskLarge;

    public ContentChunker(ChunkerParameters parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        parameters.Validate();
        Parameters = parameters;
        _gear = BuildGear(parameters.GearSeed);
        var bits = BitOperations.Log2((uint)parameters.AverageSize);
        _maskSmall = TopBits(bits + parameters.NormalizationLevel);
        _maskLarge = TopBits(bits - parameters.NormalizationLevel);
    }

    public ChunkerParameters Parameters { get; }

    /// <summary>
    /// Length of the next chunk at the start of <paramref name="data"/>. Unless <paramref name="isFinal"/>,
    /// the caller must pass at least <see cref="ChunkerParameters.MaxSize"/> bytes.
    /// </summary>
    public int NextChunkLength(ReadOnlySpan<byte> data, bool isFinal)
    {
        var min = Parameters.MinSize;
        var max = Parameters.MaxSize;
        if (!isFinal && data.Length < max)
            throw new ArgumentException("A non-final call needs at least MaxSize bytes.", nameof(data));
        var n = data.Length;
        if (n <= min)
            return n;
        if (n > max)
            n = max;
        var normal = Math.Min(Parameters.AverageSize, n);
        var gear = _gear;
        ulong hash = 0;
        var i = min;
        for (; i < normal; i++)
        {
            hash = (hash << 1) + gear[data[i]];
            if ((hash & _maskSmall) == 0)
                return i + 1;
        }
        for (; i < n; i++)
        {
            hash = (hash << 1) + gear[data[i]];
            if ((hash & _maskLarge) == 0)
                return i + 1;
        }
        return n;
    }

    private static ulong TopBits(int count) => count <= 0 ? 0 : ulong.MaxValue << (64 - count);

    // SplitMix64: a fixed, documented generator, so every implementation can rebuild the table from the seed.
    private static ulong[] BuildGear(ulong seed)
    {
        var table = new ulong[256];
        var state = seed;
        for (var i = 0; i < table.Length; i++)
        {
            state += 0x9E37_79B9_7F4A_7C15;
            var z = state;
            z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9;
            z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB;
            table[i] = z ^ (z >> 31);
        }
        return table;
    }
}
