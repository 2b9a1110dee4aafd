using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace MsdFleet.EdgeAgent.Storage;

/// <summary>
/// Where a (pre-allocated, partly written) file holds data, via lseek(SEEK_DATA/SEEK_HOLE). A resumed
/// pull uses it to look only at regions a previous run actually wrote. Where the call is unsupported the
/// whole file counts as data, which is slower but never wrong.
/// </summary>
public static partial class SparseRegions
{
    private const int SeekData = 3;
    private const int SeekHole = 4;

    public static List<(long Start, long End)> DataRanges(SafeFileHandle handle, long size)
    {
        ArgumentNullException.ThrowIfNull(handle);
        var ranges = new List<(long, long)>();
        if (!OperatingSystem.IsLinux())
        {
            ranges.Add((0, size));
            return ranges;
        }
        var fd = (int)handle.DangerousGetHandle();
        long position = 0;
        while (position < size)
        {
            var data = LSeek(fd, position, SeekData);
            if (data < 0)
            {
                if (Marshal.GetLastPInvokeError() == 6 /* ENXIO: no data after position */)
                    break;
                return [(0, size)];
            }
            var hole = LSeek(fd, data, SeekHole);
            if (hole < 0)
                return [(0, size)];
            ranges.Add((data, Math.Min(hole, size)));
            position = hole;
        }
        return ranges;
    }

    /// <summary>Bytes of a file that hold data (not holes).</summary>
    public static long DataBytes(string path, long size)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return DataRanges(handle, size).Sum(r => r.End - r.Start);
    }

    public static bool Overlaps(List<(long Start, long End)> ranges, long start, long end) =>
        ranges.Exists(r => r.Start < end && start < r.End);

    /// <summary>Frees the blocks of a range (it then reads as zeros); false where unsupported.</summary>
    public static bool PunchHole(SafeFileHandle handle, long offset, long length)
    {
        ArgumentNullException.ThrowIfNull(handle);
        const int punchHoleKeepSize = 0x02 | 0x01; // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
        return OperatingSystem.IsLinux() && Fallocate((int)handle.DangerousGetHandle(), punchHoleKeepSize, offset, length) == 0;
    }

    [LibraryImport("libc", EntryPoint = "fallocate64", SetLastError = true)]
    private static partial int Fallocate(int fd, int mode, long offset, long length);

    [LibraryImport("libc", EntryPoint = "lseek64", SetLastError = true)]
    private static partial long LSeek(int fd, long offset, int whence);
}
