using System.Globalization;
using System.Runtime.InteropServices;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Gadget;

/// <summary>
/// Proof that the host read each drive. The mass-storage function reads and writes its backing file from
/// a kernel thread (<c>file-storage</c>, one per function), so the kernel shows two things the agent can
/// use (measured in the qemu gadget VM on Debian's 6.1 and 6.12 kernels, see docs/host-reads.md):
/// <list type="bullet">
/// <item>fanotify <c>FAN_ACCESS</c>/<c>FAN_MODIFY</c> marks on each backing file report every read/write
/// with the reader's pid — the function's kthread for host I/O, anything else for a local reader, which
/// is ignored. That gives "last read at" per drive and ties each kthread to its function.</item>
/// <item><c>/proc/&lt;kthread&gt;/io</c> <c>rchar</c>/<c>wchar</c> count the bytes exactly (per function).
/// A batch of events that touched one drive of a function gets that function's whole delta; when several
/// drives of one function were read in the same batch the delta is split by event count and marked
/// estimated (use one LUN per function for exact figures).</item>
/// </list>
/// Events are drained at most 10 times a second (draining costs more than the marks). Without fanotify
/// (no CAP_SYS_ADMIN) nothing is reported rather than something misleading: inotify cannot tell the host
/// from a local <c>cat</c>. Figures count from the moment the drive's file was attached.
/// <para>Concurrency: <see cref="_lock"/> guards the drive table; the event loop runs on its own thread.</para>
/// </summary>
public sealed partial class HostReadMonitor(TimeProvider time, ILogger<HostReadMonitor> logger) : IDisposable
{
    private const uint FanClassNotif = 0, FanCloexec = 1, FanNonblock = 2;
    private const uint FanMarkAdd = 1, FanMarkRemove = 2;
    private const ulong FanAccess = 0x1, FanModify = 0x2;
    private const int AtFdCwd = -100;
    private const int MetadataBytes = 24;
    private static readonly TimeSpan BatchInterval = TimeSpan.FromMilliseconds(100);

    private readonly Lock _lock = new();
    private readonly Dictionary<int, Drive> _drives = [];
    private readonly Dictionary<int, (long Rchar, long Wchar)> _threadIo = [];
    private readonly CancellationTokenSource _stop = new();
    private int _disposed;
    private int _fd = -1;
    private bool _started;
    private Thread? _loop;

    /// <summary>True once fanotify is watching (Linux, root); false where host reads cannot be seen.</summary>
    public bool Available => _fd >= 0;

    /// <summary>
    /// Brings the marks in line with what the drives present now (a drive whose file changed starts from
    /// zero) and returns each drive's figures; drives without a medium or not yet read by the host have none.
    /// </summary>
    public IReadOnlyDictionary<int, HostReadReport> Read(IReadOnlyList<DriveState> drives)
    {
        ArgumentNullException.ThrowIfNull(drives);
        EnsureStarted();
        var result = new Dictionary<int, HostReadReport>();
        lock (_lock)
        {
            foreach (var state in drives)
            {
                var file = state.HasMedium ? state.File : null;
                if (!_drives.TryGetValue(state.Index, out var drive) || drive.File != file)
                {
                    if (drive is not null)
                        Unmark(drive.File);
                    drive = _drives[state.Index] = new Drive(file);
                    if (file is not null)
                        Mark(file);
                }
                if (drive.LastReadUnixMs > 0 || drive.BytesWritten > 0)
                    result[state.Index] = new HostReadReport
                    {
                        BytesRead = drive.BytesRead,
                        LastReadUnixMs = drive.LastReadUnixMs,
                        BytesWritten = drive.BytesWritten,
                        BytesEstimated = drive.Estimated,
                    };
            }
            foreach (var gone in _drives.Keys.Where(k => drives.All(d => d.Index != k)).ToList())
            {
                Unmark(_drives[gone].File);
                _drives.Remove(gone);
            }
        }
        return result;
    }

    private void EnsureStarted()
    {
        if (_started)
            return;
        _started = true;
        if (!OperatingSystem.IsLinux())
            return;
        var largeFile = RuntimeInformation.ProcessArchitecture is Architecture.X86 or Architecture.X64 ? 0x8000 : 0x20000; // O_LARGEFILE
        _fd = FanotifyInit(FanClassNotif | FanCloexec | FanNonblock, (uint)largeFile);
        if (_fd < 0)
        {
            Log.Unavailable(logger, Marshal.GetLastPInvokeError());
            return;
        }
        SampleAllThreads();
        _loop = new Thread(Loop) { IsBackground = true, Name = "host-read monitor" };
        _loop.Start();
    }

    private void Mark(string file)
    {
        if (_fd >= 0 && FanotifyMark(_fd, FanMarkAdd, FanAccess | FanModify, AtFdCwd, file) != 0)
            Log.MarkFailed(logger, file, Marshal.GetLastPInvokeError());
        // A new attachment: the thread that will serve it may not have been sampled yet.
        SampleAllThreads();
    }

    private void Unmark(string? file)
    {
        if (_fd >= 0 && file is not null)
            _ = FanotifyMark(_fd, FanMarkRemove, FanAccess | FanModify, AtFdCwd, file);
    }

    private unsafe void Loop()
    {
        var buffer = new byte[64 * 1024];
        var touched = new Dictionary<int, Dictionary<int, (int Reads, int Writes)>>();
        while (!_stop.IsCancellationRequested)
        {
            var started = time.GetTimestamp();
            var pollFd = new PollFd { Fd = _fd, Events = 1 /* POLLIN */ };
            if (Poll(&pollFd, 1, 1000) <= 0)
                continue;
            touched.Clear();
            while (true)
            {
                nint read;
                fixed (byte* p = buffer)
                    read = Read(_fd, p, buffer.Length);
                if (read <= 0)
                    break;
                for (var offset = 0; offset + MetadataBytes <= read;)
                {
                    var length = BitConverter.ToInt32(buffer, offset);
                    var mask = BitConverter.ToUInt64(buffer, offset + 8);
                    var fd = BitConverter.ToInt32(buffer, offset + 16);
                    var pid = BitConverter.ToInt32(buffer, offset + 20);
                    if (fd >= 0)
                    {
                        var path = PathOf(fd);
                        _ = Close(fd);
                        if (path is not null && IsFunctionThread(pid))
                            Count(touched, pid, path, (mask & FanAccess) != 0, (mask & FanModify) != 0);
                    }
                    if (length < MetadataBytes)
                        break;
                    offset += length;
                }
            }
            if (touched.Count > 0)
                Attribute(touched);
            var elapsed = time.GetElapsedTime(started);
            if (elapsed < BatchInterval)
                _stop.Token.WaitHandle.WaitOne(BatchInterval - elapsed);
        }
    }

    private void Count(Dictionary<int, Dictionary<int, (int Reads, int Writes)>> touched, int pid, string path, bool read, bool write)
    {
        lock (_lock)
        {
            foreach (var (index, drive) in _drives)
            {
                if (drive.File != path)
                    continue;
                if (!touched.TryGetValue(pid, out var perDrive))
                    touched[pid] = perDrive = [];
                var (reads, writes) = perDrive.GetValueOrDefault(index);
                perDrive[index] = (reads + (read ? 1 : 0), writes + (write ? 1 : 0));
            }
        }
    }

    /// <summary>Each thread's byte delta since its last sample, to the drives it touched in this batch.</summary>
    private void Attribute(Dictionary<int, Dictionary<int, (int Reads, int Writes)>> touched)
    {
        var now = time.GetUtcNow().ToUnixTimeMilliseconds();
        lock (_lock)
        {
            foreach (var (pid, perDrive) in touched)
            {
                if (ReadIo(pid) is not { } io)
                    continue;
                var known = _threadIo.TryGetValue(pid, out var last);
                _threadIo[pid] = io;
                var (readDelta, writeDelta) = known ? (io.Rchar - last.Rchar, io.Wchar - last.Wchar) : (0L, 0L);
                var reads = perDrive.Values.Sum(v => v.Reads);
                var writes = perDrive.Values.Sum(v => v.Writes);
                foreach (var (index, (r, w)) in perDrive)
                {
                    var drive = _drives[index];
                    if (r > 0)
                    {
                        drive.LastReadUnixMs = now;
                        drive.BytesRead += reads == r ? readDelta : readDelta * r / reads;
                    }
                    if (w > 0)
                        drive.BytesWritten += writes == w ? writeDelta : writeDelta * w / writes;
                    drive.Estimated |= perDrive.Count > 1 || !known;
                }
            }
        }
    }

    /// <summary>Baselines every file-storage thread, so the first batch after an attach is counted too.</summary>
    private void SampleAllThreads()
    {
        if (_fd < 0)
            return;
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) || !IsFunctionThread(pid))
                continue;
            if (ReadIo(pid) is { } io)
                lock (_lock)
                    _threadIo.TryAdd(pid, io);
        }
    }

    private static bool IsFunctionThread(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/comm").TrimEnd('\n') == "file-storage";
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static (long Rchar, long Wchar)? ReadIo(int pid)
    {
        try
        {
            long rchar = -1, wchar = -1;
            foreach (var line in File.ReadLines($"/proc/{pid}/io"))
            {
                if (line.StartsWith("rchar: ", StringComparison.Ordinal))
                    rchar = long.Parse(line.AsSpan(7), CultureInfo.InvariantCulture);
                else if (line.StartsWith("wchar: ", StringComparison.Ordinal))
                    wchar = long.Parse(line.AsSpan(7), CultureInfo.InvariantCulture);
            }
            return rchar >= 0 && wchar >= 0 ? (rchar, wchar) : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException)
        {
            return null;
        }
    }

    private static string? PathOf(int fd)
    {
        try
        {
            return new FileInfo($"/proc/self/fd/{fd.ToString(CultureInfo.InvariantCulture)}").LinkTarget;
        }
        catch (IOException)
        {
            return null;
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _stop.Cancel();
        _loop?.Join(TimeSpan.FromSeconds(2));
        if (_fd >= 0)
            _ = Close(_fd);
        _fd = -1;
        _stop.Dispose();
    }

    private sealed class Drive(string? file)
    {
        public string? File { get; } = file;
        public long BytesRead { get; set; }
        public long BytesWritten { get; set; }
        public long LastReadUnixMs { get; set; }
        public bool Estimated { get; set; }
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport("libc", EntryPoint = "fanotify_init", SetLastError = true)]
    private static partial int FanotifyInit(uint flags, uint eventFlags);

    [LibraryImport("libc", EntryPoint = "fanotify_mark", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int FanotifyMark(int fd, uint flags, ulong mask, int dirFd, string path);

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static unsafe partial int Poll(PollFd* fds, nuint count, int timeoutMs);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static unsafe partial nint Read(int fd, byte* buffer, nint count);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Host reads cannot be observed: fanotify_init failed (errno {Errno}); the agent needs root (CAP_SYS_ADMIN) on a kernel with fanotify")]
        public static partial void Unavailable(ILogger logger, int errno);

        [LoggerMessage(2, LogLevel.Debug, "fanotify mark on {File} failed (errno {Errno})")]
        public static partial void MarkFailed(ILogger logger, string file, int errno);
    }
}
