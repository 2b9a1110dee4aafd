using System.Runtime.InteropServices;

namespace MsdFleet.Protocol.IO;

/// <summary>
/// Crash-safe file replacement: write a temporary file, fsync it, rename it over the target, fsync the
/// folder. After a power cut the target is either the old or the new content, never a mix. With a mode
/// (0600 for keys, tokens and agent secrets) the file never exists with any other permissions. Shared by
/// the agent, the Coordinator and msdctl.
/// </summary>
public static partial class AtomicFile
{
    public static Task WriteAsync(string path, ReadOnlyMemory<byte> content, CancellationToken cancellationToken) =>
        WriteAsync(path, content, null, cancellationToken);

    /// <summary>As above; <paramref name="mode"/> (e.g. 0600 for secrets) is set when the temporary file is created, so no other mode is ever visible.</summary>
    public static async Task WriteAsync(string path, ReadOnlyMemory<byte> content, UnixFileMode? mode, CancellationToken cancellationToken)
    {
        var temp = path + ".tmp";
        File.Delete(temp);
        await using (var stream = new FileStream(temp, Options(mode)))
        {
            await stream.WriteAsync(content, cancellationToken);
            stream.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
        SyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    /// <summary>Synchronous <see cref="WriteAsync(string, ReadOnlyMemory{byte}, UnixFileMode?, CancellationToken)"/>, for start-up code.</summary>
    public static void Write(string path, ReadOnlySpan<byte> content, UnixFileMode? mode)
    {
        var temp = path + ".tmp";
        File.Delete(temp);
        using (var stream = new FileStream(temp, Options(mode)))
        {
            stream.Write(content);
            stream.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
        SyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    private static FileStreamOptions Options(UnixFileMode? mode)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None };
        if (mode is { } m && !OperatingSystem.IsWindows())
            options.UnixCreateMode = m;
        return options;
    }

    /// <summary>Makes renames and creations in <paramref name="directory"/> durable (fsync on the folder).</summary>
    public static void SyncDirectory(string directory)
    {
        if (!OperatingSystem.IsLinux())
            return;
        // O_RDONLY alone opens a folder on Linux; O_DIRECTORY's value differs between architectures.
        var fd = Open(directory, ORdOnly);
        if (fd < 0)
            return;
        try
        {
            _ = Fsync(fd);
        }
        finally
        {
            _ = Close(fd);
        }
    }

    private const int ORdOnly = 0;

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}
