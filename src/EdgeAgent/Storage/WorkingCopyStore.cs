using System.Buffers;
using System.Runtime.InteropServices;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using MsdFleet.Protocol.IO;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.EdgeAgent.Storage;

/// <summary>
/// One working copy per writable drive under <c>working/</c>: <c>drive{N}.img</c>, the file the gadget
/// presents read-write, and <c>drive{N}.json</c>, which says which verified image it was made from and
/// the file's modification time when it last matched that image. A writable drive never points at the
/// shared, content-addressed cache file, so what the server writes changes only its own copy and the
/// cache stays verifiable. A copy has <i>unsaved writes</i> once its mtime moved past the recorded one
/// (the kernel updates mtime on every write to the backing file); such a copy is removed only when the
/// desired state says so explicitly.
/// <para>Crash safety: the copy is made as <c>drive{N}.tmp</c>, flushed, renamed, the folder flushed, and
/// only then is the record written (atomically). A record is what makes a copy attachable, so a copy
/// without a record was never presented to a server and is removed at start, as are leftover .tmp files
/// and records without a copy.</para>
/// </summary>
public sealed partial class WorkingCopyStore
{
    private const ulong Ficlone = 0x40049409; // _IOW(0x94, 9, int)
    private const int CopyBufferBytes = 1 << 20;

    public WorkingCopyStore(LocalImageStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        Folder = Path.Combine(store.Root, "working");
        Directory.CreateDirectory(Folder);
    }

    public string Folder { get; }

    public string ImagePath(int drive) => Path.Combine(Folder, $"drive{drive}.img");
    private string RecordPath(int drive) => Path.Combine(Folder, $"drive{drive}.json");
    private string TempPath(int drive) => Path.Combine(Folder, $"drive{drive}.tmp");

    /// <summary>The drive whose working copy <paramref name="path"/> is, or null for any other path.</summary>
    public int? DriveOfPath(string? path)
    {
        if (string.IsNullOrEmpty(path) || !string.Equals(Path.GetDirectoryName(Path.GetFullPath(path)), Folder, StringComparison.Ordinal))
            return null;
        var name = Path.GetFileName(path);
        return name.StartsWith("drive", StringComparison.Ordinal) && name.EndsWith(".img", StringComparison.Ordinal)
               && int.TryParse(name.AsSpan(5, name.Length - 9), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var drive)
            ? drive : null;
    }

    /// <summary>The working copy of a drive, or null when it has none (or its record is damaged).</summary>
    public WorkingCopy? Get(int drive)
    {
        var record = RecordPath(drive);
        var image = ImagePath(drive);
        if (!File.Exists(record) || !File.Exists(image))
            return null;
        var saved = ReadRecord(drive);
        if (saved is null || !ImageDigest.TryParse(saved.BaseDigest, out var digest))
            return null;
        var info = new FileInfo(image);
        var unsaved = info.LastWriteTimeUtc.Ticks != saved.CleanMtimeTicks || info.Length != saved.Size;
        return new WorkingCopy(drive, digest, image, info.Length, unsaved) { LastSnapshot = saved.LastSnapshot };
    }

    /// <summary>Every drive's working copy.</summary>
    public IReadOnlyDictionary<int, WorkingCopy> List()
    {
        var copies = new Dictionary<int, WorkingCopy>();
        foreach (var file in Directory.EnumerateFiles(Folder, "drive*.img"))
            if (DriveOfPath(file) is { } drive && Get(drive) is { } copy)
                copies[drive] = copy;
        return copies;
    }

    /// <summary>Bytes the working copies occupy (their data regions; holes cost nothing), for the cache quota.</summary>
    public long DataBytes() =>
        Directory.EnumerateFiles(Folder, "drive*.*").Sum(f => SparseRegions.DataBytes(f, new FileInfo(f).Length));

    /// <summary>
    /// Makes drive <paramref name="drive"/>'s working copy of the verified image at <paramref name="basePath"/>:
    /// a reflink clone (FICLONE: btrfs, xfs, bcachefs) when the filesystem can, otherwise a copy that keeps
    /// holes as holes. Reports bytes copied. Returns true for a clone.
    /// </summary>
    public async Task<bool> CreateAsync(int drive, ImageDigest baseDigest, string basePath, IProgress<long>? progress, CancellationToken cancellationToken)
    {
        var temp = TempPath(drive);
        File.Delete(temp);
        bool cloned;
        long size;
        using (var source = File.OpenHandle(basePath, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            size = RandomAccess.GetLength(source);
            using var target = File.OpenHandle(temp, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);
            cloned = TryClone(source, target);
            if (!cloned)
                await CopySparseAsync(source, target, size, progress, cancellationToken);
            RandomAccess.FlushToDisk(target);
        }
        File.Move(temp, ImagePath(drive), overwrite: true);
        AtomicFile.SyncDirectory(Folder);
        await WriteRecordAsync(drive, baseDigest, cancellationToken);
        return cloned;
    }

    /// <summary>Records the copy as matching <paramref name="baseDigest"/> now (after it was made).</summary>
    public async Task WriteRecordAsync(int drive, ImageDigest baseDigest, CancellationToken cancellationToken)
    {
        var info = new FileInfo(ImagePath(drive));
        var record = new WorkingCopyRecord(baseDigest.ToString(), info.LastWriteTimeUtc.Ticks, info.Length, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        await AtomicFile.WriteAsync(RecordPath(drive), JsonSerializer.SerializeToUtf8Bytes(record, WorkingCopyJson.Default.WorkingCopyRecord), cancellationToken);
    }

    /// <summary>
    /// Records how a snapshot of the copy ended. A saved copy counts as clean from the moment it was cut:
    /// <paramref name="cleanMtimeTicks"/> is the copy's mtime read before cutting, so a write that raced the
    /// cut still shows as unsaved. The base stays what the copy was made from: the drive keeps its copy.
    /// </summary>
    public async Task RecordSnapshotAsync(int drive, SnapshotOutcome outcome, long? cleanMtimeTicks, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(outcome);
        var record = ReadRecord(drive) ?? throw new IOException($"Drive {drive} has no working copy record.");
        if (cleanMtimeTicks is { } clean)
            record = record with { CleanMtimeTicks = clean, Size = new FileInfo(ImagePath(drive)).Length };
        record = record with { LastSnapshot = outcome };
        await AtomicFile.WriteAsync(RecordPath(drive), JsonSerializer.SerializeToUtf8Bytes(record, WorkingCopyJson.Default.WorkingCopyRecord), cancellationToken);
    }

    private WorkingCopyRecord? ReadRecord(int drive)
    {
        try
        {
            return File.Exists(RecordPath(drive)) ? JsonSerializer.Deserialize(File.ReadAllBytes(RecordPath(drive)), WorkingCopyJson.Default.WorkingCopyRecord) : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>Removes a drive's working copy and its record (the record first: a copy without one is never attached).</summary>
    public void Discard(int drive)
    {
        File.Delete(RecordPath(drive));
        File.Delete(ImagePath(drive));
        File.Delete(TempPath(drive));
        AtomicFile.SyncDirectory(Folder);
    }

    /// <summary>At start: removes what a crash left half-made. Returns the names removed.</summary>
    public IReadOnlyList<string> RemoveLeftovers(Func<string, bool> isAttached)
    {
        ArgumentNullException.ThrowIfNull(isAttached);
        var removed = new List<string>();
        foreach (var file in Directory.EnumerateFiles(Folder))
        {
            var name = Path.GetFileName(file);
            var drive = DriveOfPath(file);
            var leftover = name.EndsWith(".tmp", StringComparison.Ordinal)
                || (name.EndsWith(".json", StringComparison.Ordinal) && !File.Exists(Path.ChangeExtension(file, ".img")))
                || (drive is { } d && Get(d) is null && !isAttached(file));
            if (leftover)
            {
                File.Delete(file);
                removed.Add(name);
            }
        }
        if (removed.Count > 0)
            AtomicFile.SyncDirectory(Folder);
        return removed;
    }

    private static bool TryClone(SafeFileHandle source, SafeFileHandle target) =>
        OperatingSystem.IsLinux() && Ioctl((int)target.DangerousGetHandle(), Ficlone, (int)source.DangerousGetHandle()) == 0;

    private static async Task CopySparseAsync(SafeFileHandle source, SafeFileHandle target, long size, IProgress<long>? progress, CancellationToken cancellationToken)
    {
        RandomAccess.SetLength(target, size);
        var buffer = ArrayPool<byte>.Shared.Rent(CopyBufferBytes);
        try
        {
            long copied = 0;
            foreach (var (start, end) in SparseRegions.DataRanges(source, size))
            {
                for (var offset = start; offset < end;)
                {
                    var count = (int)Math.Min(buffer.Length, end - offset);
                    var read = await RandomAccess.ReadAsync(source, buffer.AsMemory(0, count), offset, cancellationToken);
                    if (read == 0)
                        throw new IOException($"The base image ended at {offset} while {size} bytes were expected.");
                    // Zero blocks inside data regions stay holes too (a pulled image's zero chunks may be real blocks).
                    if (buffer.AsSpan(0, read).ContainsAnyExcept((byte)0))
                        await RandomAccess.WriteAsync(target, buffer.AsMemory(0, read), offset, cancellationToken);
                    offset += read;
                    copied += read;
                    progress?.Report(copied);
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int Ioctl(int fd, ulong request, int argument);
}

/// <summary>A drive's working copy as found on disk.</summary>
public sealed record WorkingCopy(int Drive, ImageDigest BaseDigest, string Path, long Size, bool UnsavedWrites)
{
    /// <summary>How the last snapshot of this copy ended, or null when none was taken.</summary>
    public SnapshotOutcome? LastSnapshot { get; init; }
}

/// <summary>A finished snapshot: which request, and the image it made or why it failed.</summary>
public sealed record SnapshotOutcome(string Id, string Name, bool Succeeded, string? ImageDigest, string? Error, long BytesTotal, long BytesSent);

internal sealed record WorkingCopyRecord(string BaseDigest, long CleanMtimeTicks, long Size, long CreatedAtUnixMs)
{
    public SnapshotOutcome? LastSnapshot { get; init; }
}

[System.Text.Json.Serialization.JsonSerializable(typeof(WorkingCopyRecord))]
[System.Text.Json.Serialization.JsonSerializable(typeof(SnapshotOutcome))]
internal sealed partial class WorkingCopyJson : System.Text.Json.Serialization.JsonSerializerContext;
