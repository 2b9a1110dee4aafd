using MsdFleet.Protocol.Manifests;

namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>
/// Which ranged GETs fetch what is missing: runs of missing chunks that are consecutive in the image and
/// back to back in one source, each at most <see cref="MaxRangeBytes"/> (or one chunk). Pure.
/// </summary>
public static class RangePlanner
{
    public const int MaxRangeBytes = 8 * 1024 * 1024;

    public static List<(int First, int Last)> Plan(ImageManifest manifest, ImageLayout layout, IReadOnlySet<int> done)
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
                   && bytes + manifest.Chunks[i + 1].Length <= MaxRangeBytes)
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
