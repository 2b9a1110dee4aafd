using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Options;

namespace MsdFleet.Coordinator.Storage;

/// <summary>
/// The embedded default store: one file per object under a root folder. Puts write a temporary file
/// and rename it into place, so a crash never leaves a half-written object under its real name.
/// Durability comes from <see cref="FlushAsync"/>, one <c>syncfs(2)</c> for everything written so far,
/// instead of an fsync per 64 KiB chunk.
/// Large puts whose bytes start on a page boundary (the pack writer's buffers) are written with
/// <c>O_DIRECT</c>: the bytes go from the caller's buffer to the disk without being copied into the page
/// cache first. On the 2-core machines here that copy was 44 % of the Coordinator's CPU during an ingest
/// (docs/ingest-profile.md). A filesystem that refuses O_DIRECT (tmpfs) gets ordinary writes.
/// </summary>
public sealed partial class FileSystemObjectStore : IObjectStore, IDisposable
{
    private const string TempFolder = ".tmp";
    private readonly string _root;
    private readonly string _tempRoot;
    private readonly Microsoft.Win32.SafeHandles.SafeFileHandle _syncHandle;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, byte> _knownFolders = new(StringComparer.Ordinal);

    public FileSystemObjectStore(IOptions<ObjectStoreOptions> options)
        : this(options?.Value.Path ?? throw new ArgumentNullException(nameof(options)))
    {
    }

    public FileSystemObjectStore(string root)
    {
        _root = Path.GetFullPath(root);
        _tempRoot = Path.Combine(_root, TempFolder);
        Directory.CreateDirectory(_tempRoot);
        // Leftovers of puts interrupted by a crash: never visible under a real key, safe to drop.
        foreach (var stale in Directory.EnumerateFiles(_tempRoot))
            File.Delete(stale);
        _syncHandle = File.OpenHandle(Path.Combine(_root, ".sync"), FileMode.OpenOrCreate, FileAccess.ReadWrite);
    }

    public Task<long?> GetSizeAsync(string key, CancellationToken cancellationToken)
    {
        var info = new FileInfo(PathOf(key));
        return Task.FromResult(info.Exists ? info.Length : (long?)null);
    }

    public async Task PutAsync(string key, ReadOnlyMemory<byte> content, CancellationToken cancellationToken)
    {
        var target = PathOf(key);
        var temp = Path.Combine(_tempRoot, Guid.NewGuid().ToString("N"));
        try
        {
            if (!await TryWriteDirectAsync(temp, content, cancellationToken))
            {
                using var handle = File.OpenHandle(temp, FileMode.CreateNew, FileAccess.Write);
                await RandomAccess.WriteAsync(handle, content, 0, cancellationToken);
            }
            var folder = Path.GetDirectoryName(target)!;
            if (!_knownFolders.ContainsKey(folder))
            {
                Directory.CreateDirectory(folder);
                _knownFolders.TryAdd(folder, 0);
            }
            File.Move(temp, target, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    /// <summary>The alignment O_DIRECT needs for the buffer, the length and the file offset.</summary>
    public const int DirectAlignment = 4096;
    private const int DirectMinimumBytes = 1024 * 1024;
    private volatile bool _directRefused = DirectFlag == 0;
    private long _directWrites;

    /// <summary>How many puts went to the disk with O_DIRECT (for tests and the ingest profile).</summary>
    public long DirectWrites => Interlocked.Read(ref _directWrites);

    // O_DIRECT differs between architectures (asm-generic vs x86); .NET's FileOptions do not expose it.
    private static readonly int DirectFlag = !OperatingSystem.IsLinux() ? 0 : RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 or Architecture.X86 => 0x4000,
        Architecture.Arm64 or Architecture.Arm => 0x10000,
        _ => 0,
    };

    /// <summary>
    /// Writes the page-aligned bulk of <paramref name="content"/> with O_DIRECT and the tail (under one page)
    /// through the page cache, into a new file. False (and nothing written) when the content is small, not
    /// page-aligned in memory, or the filesystem refuses O_DIRECT.
    /// </summary>
    private async Task<bool> TryWriteDirectAsync(string path, ReadOnlyMemory<byte> content, CancellationToken cancellationToken)
    {
        if (_directRefused || content.Length < DirectMinimumBytes || !IsPageAligned(content))
            return false;
        var bulk = content.Length / DirectAlignment * DirectAlignment;
        const int WriteOnlyCreateExclusive = 0x1 | 0x40 | 0x80 | 0x80000; // O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC
        var fd = OpenFile(path, WriteOnlyCreateExclusive | DirectFlag, 0x1A4 /* 0644 */);
        if (fd < 0)
        {
            // EINVAL: this filesystem has no O_DIRECT (tmpfs). Anything else is for the ordinary path to report.
            if (Marshal.GetLastPInvokeError() == 22)
                _directRefused = true;
            return false;
        }
        var direct = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
        try
        {
            await RandomAccess.WriteAsync(direct, content[..bulk], 0, cancellationToken);
        }
        catch (IOException)
        {
            // EINVAL from a filesystem that opens O_DIRECT files but cannot write them: plain writes from now on.
            direct.Dispose();
            File.Delete(path);
            _directRefused = true;
            return false;
        }
        direct.Dispose();
        if (bulk < content.Length)
        {
            using var tail = File.OpenHandle(path, FileMode.Open, FileAccess.Write);
            await RandomAccess.WriteAsync(tail, content[bulk..], bulk, cancellationToken);
        }
        Interlocked.Increment(ref _directWrites);
        return true;
    }

    private static unsafe bool IsPageAligned(ReadOnlyMemory<byte> content)
    {
        using var pin = content.Pin();
        return (nuint)pin.Pointer % DirectAlignment == 0;
    }

    public Task<Stream?> OpenReadAsync(string key, long offset, CancellationToken cancellationToken)
    {
        try
        {
            var stream = new FileStream(PathOf(key), new FileStreamOptions
            {
                Mode = FileMode.Open,
                Access = FileAccess.Read,
                Share = FileShare.Read | FileShare.Delete,
                BufferSize = 0,
                Options = FileOptions.Asynchronous | FileOptions.SequentialScan,
            });
            if (offset > 0)
                stream.Seek(offset, SeekOrigin.Begin);
            return Task.FromResult<Stream?>(stream);
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
        {
            return Task.FromResult<Stream?>(null);
        }
    }

    public Task<bool> DeleteAsync(string key, CancellationToken cancellationToken)
    {
        var path = PathOf(key);
        if (!File.Exists(path))
            return Task.FromResult(false);
        File.Delete(path);
        return Task.FromResult(true);
    }

    public async IAsyncEnumerable<string> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var folder = PathOf(prefix);
        if (!Directory.Exists(folder))
            yield break;
        foreach (var file in Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories))
        {
            cancellationToken.ThrowIfCancellationRequested();
            yield return Path.GetRelativePath(_root, file).Replace(Path.DirectorySeparatorChar, '/');
        }
        await Task.CompletedTask;
    }

    public Task FlushAsync(CancellationToken cancellationToken) =>
        Task.Run(() =>
        {
            if (OperatingSystem.IsLinux())
            {
                if (SyncFs((int)_syncHandle.DangerousGetHandle()) != 0)
                    throw new IOException($"syncfs failed with errno {Marshal.GetLastPInvokeError()}.");
            }
            else
            {
                RandomAccess.FlushToDisk(_syncHandle);
            }
        }, cancellationToken);

    public void Dispose() => _syncHandle.Dispose();

    private string PathOf(string key)
    {
        // Keys are built by ObjectKeys; this guard keeps a future bug from escaping the root.
        if (key.Length == 0 || key.Contains("..", StringComparison.Ordinal) || key.StartsWith('/') || key.Contains('\\', StringComparison.Ordinal))
            throw new ArgumentException($"Invalid object key '{key}'.", nameof(key));
        return Path.Combine(_root, key.Replace('/', Path.DirectorySeparatorChar));
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int OpenFile(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "syncfs", SetLastError = true)]
    private static partial int SyncFs(int fd);
}
