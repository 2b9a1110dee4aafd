using MsdFleet.Protocol.Manifests;

namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>
/// Which ranged GETs fetch what is missing: runs of missing chunks that are consecutive in the image and
/// back to back in one source, each at most <see cref="MaxRangeBytes"/> (or one chunk). Pure.
/// <para>A capped pull asks for about a second's worth at a time (<see cref="RangeBytesFor"/>): the server sends a range as
/// fast as the link takes it, into socket buffers the capped reader drains slowly, so what a stop (a download window closing)
/// throws away is bounded by one range, not by every connection's buffers.</para>
/// </summary>
public static class RangePlanner
{
    public const int MaxRangeBytes = 8 * 1024 * 1024;

    public const int MinRangeBytes = 256 * 1024;

    /// <summary>The range size for a pull capped at <paramref name="bytesPerSecond"/> (0: uncapped, the largest).</summary>
    public static int RangeBytesFor(long bytesPerSecond) =>
        bytesPerSecond <= 0 ? MaxRangeBytes : (int)Math.Clamp(bytesPerSecond, MinRangeBytes, MaxRangeBytes);

    public static List<(int First, int Last)> Plan(ImageManifest manifest, ImageLayout layout, IReadOnlySet<int> done, int maxRangeBytes = MaxRangeBytes)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(done);
        var ranges = new List<(int, int)>();
        var i = 0;
        var count = manifest.Chunks.Count;
        while (i < count)
        {
            if (done.Contains(i))
            {
                i++;
                continue;
            }
            var first = i;
            long bytes = manifest.Chunks[i].Length;
            while (i + 1 < count && !done.Contains(i + 1)
                   && layout.Chunks[i + 1].Source == layout.Chunks[i].Source
                   && layout.Chunks[i + 1].Offset == layout.Chunks[i].Offset + manifest.Chunks[i].Length
                   && bytes + manifest.Chunks[i + 1].Length <= maxRangeBytes)
            {
                i++;
                bytes += manifest.Chunks[i].Length;
            }
            ranges.Add((first, i));
            i++;
        }
        return ranges;
    }
}
