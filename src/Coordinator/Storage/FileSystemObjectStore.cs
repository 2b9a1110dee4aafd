using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Options;

namespace MsdFleet.Coordinator.Storage;

/// <summary>
/// The embedded default store: one file per object under a root folder. Puts write a temporary file
/// and rename it into place, so a crash never leaves a half-written object under its real name.
/// Durability comes from <see cref="FlushAsync"/>, one <c>syncfs(2)</c> for everything written so far,
/// instead of an fsync per 64 KiB chunk.
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
            using (var handle = File.OpenHandle(temp, FileMode.CreateNew, FileAccess.Write))
                await RandomAccess.WriteAsync(handle, content, 0, cancellationToken);
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

    [LibraryImport("libc", EntryPoint = "syncfs", SetLastError = true)]
    private static partial int SyncFs(int fd);
}
