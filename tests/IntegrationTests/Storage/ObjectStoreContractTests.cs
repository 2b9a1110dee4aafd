using System.Text;
using MsdFleet.Coordinator.Storage;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests.Storage;

/// <summary>
/// What every <see cref="IObjectStore"/> must do. Each backend derives from this class and runs the
/// same checks (the S3 backend joins when it exists).
/// </summary>
public abstract class ObjectStoreContractTests
{
    protected abstract IObjectStore Store { get; }

    protected static readonly CancellationToken None = CancellationToken.None;

    [Fact]
    public async Task Put_ThenRead_SameBytes()
    {
        await Store.PutAsync("chunks/ab/abc", Encoding.UTF8.GetBytes("hello"), None);
        Assert.Equal(5, await Store.GetSizeAsync("chunks/ab/abc", None));
        Assert.Equal("hello", Encoding.UTF8.GetString((await Store.GetBytesAsync("chunks/ab/abc", 100, None))!));
    }

    [Fact]
    public async Task OpenRead_AtOffset_ReadsTail()
    {
        await Store.PutAsync("catalog/x", Encoding.UTF8.GetBytes("0123456789"), None);
        await using var stream = (await Store.OpenReadAsync("catalog/x", 6, None))!;
        using var reader = new StreamReader(stream);
        Assert.Equal("6789", await reader.ReadToEndAsync());
    }

    [Fact]
    public async Task Missing_IsNullNotError()
    {
        Assert.Null(await Store.GetSizeAsync("catalog/missing", None));
        Assert.Null(await Store.OpenReadAsync("catalog/missing", 0, None));
        Assert.False(await Store.DeleteAsync("catalog/missing", None));
    }

    [Fact]
    public async Task Put_Overwrite_ReplacesWholeObject()
    {
        await Store.PutAsync("fleet/desired/a", Encoding.UTF8.GetBytes("a much longer first version"), None);
        await Store.PutAsync("fleet/desired/a", Encoding.UTF8.GetBytes("v2"), None);
        Assert.Equal("v2", Encoding.UTF8.GetString((await Store.GetBytesAsync("fleet/desired/a", 100, None))!));
    }

    [Fact]
    public async Task List_ReturnsKeysUnderPrefixOnly()
    {
        await Store.PutAsync("catalog/one", new byte[] { 1 }, None);
        await Store.PutAsync("catalog/two", new byte[] { 2 }, None);
        await Store.PutAsync("manifests/sha256/zzz", new byte[] { 3 }, None);
        var keys = new List<string>();
        await foreach (var key in Store.ListAsync("catalog/", None))
            keys.Add(key);
        Assert.Equal(["catalog/one", "catalog/two"], keys.Order());
    }

    [Fact]
    public async Task Delete_RemovesObject()
    {
        await Store.PutAsync("catalog/gone", new byte[] { 1 }, None);
        Assert.True(await Store.DeleteAsync("catalog/gone", None));
        Assert.Null(await Store.GetSizeAsync("catalog/gone", None));
    }

    [Fact]
    public async Task GetBytes_OverLimit_Refused()
    {
        await Store.PutAsync("catalog/big", new byte[1000], None);
        await Assert.ThrowsAsync<InvalidDataException>(() => Store.GetBytesAsync("catalog/big", 999, None));
    }

    [Fact]
    public async Task Flush_Succeeds() => await Store.FlushAsync(None);

    [Theory]
    [InlineData("../escape")]
    [InlineData("/absolute")]
    [InlineData("a/../../b")]
    [InlineData("")]
    public async Task Put_KeyEscapingStore_Refused(string key) =>
        await Assert.ThrowsAsync<ArgumentException>(() => Store.PutAsync(key, new byte[] { 1 }, None));
}

public sealed class FileSystemObjectStoreTests : ObjectStoreContractTests, IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "msdfleet-store-" + Guid.NewGuid().ToString("N"));
    private readonly FileSystemObjectStore _store;

    public FileSystemObjectStoreTests() => _store = new FileSystemObjectStore(_root);

    protected override IObjectStore Store => _store;

    public void Dispose()
    {
        _store.Dispose();
        Directory.Delete(_root, true);
    }

    /// <summary>
    /// A pack-sized, page-aligned put (the pack writer's buffers) goes to the disk with O_DIRECT, its tail under
    /// one page through the page cache (a filesystem that refuses O_DIRECT gets ordinary writes; tmpfs accepts it
    /// on recent kernels). On disk and in memory the object reads back byte for byte, and an unaligned buffer
    /// takes the ordinary path.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Put_PageAlignedPack_ReadsBackExactly_DirectWhereTheFilesystemAllows(bool onTmpfs)
    {
        var root = onTmpfs ? Path.Combine("/dev/shm", "msdfleet-store-" + Guid.NewGuid().ToString("N")) : _root;
        using var store = onTmpfs ? new FileSystemObjectStore(root) : null;
        var target = store ?? _store;
        try
        {
            var buffer = PageAlignedBuffers.Rent();
            try
            {
                var length = 3 * 1024 * 1024 + 1234; // not a multiple of a page: the tail goes through the page cache
                Random.Shared.NextBytes(buffer.Memory.Span[..length]);
                await target.PutAsync("packs/aligned", buffer.Memory[..length], None);
                var unaligned = buffer.Memory.Slice(1, 2 * 1024 * 1024).ToArray().AsMemory();
                await target.PutAsync("packs/unaligned", buffer.Memory.Slice(1, 2 * 1024 * 1024), None);
                Assert.Equal(buffer.Memory[..length].ToArray(), await ReadAllAsync(target, "packs/aligned"));
                Assert.Equal(unaligned.ToArray(), await ReadAllAsync(target, "packs/unaligned"));
                var format = new DriveInfo(root).DriveFormat;
                if (format is "ext4" or "xfs" or "btrfs")
                    Assert.Equal(1, target.DirectWrites); // only the aligned one
            }
            finally
            {
                PageAlignedBuffers.Return(buffer);
            }
        }
        finally
        {
            if (onTmpfs)
                Directory.Delete(root, true);
        }
    }

    private static async Task<byte[]> ReadAllAsync(FileSystemObjectStore store, string key)
    {
        await using var stream = await store.OpenReadAsync(key, 0, None);
        using var copy = new MemoryStream();
        await stream!.CopyToAsync(copy);
        return copy.ToArray();
    }

    [Fact]
    public void Open_LeftoverTempFiles_Removed()
    {
        File.WriteAllText(Path.Combine(_root, ".tmp", "crashed-put"), "half");
        using var reopened = new FileSystemObjectStore(_root);
        Assert.Empty(Directory.GetFiles(Path.Combine(_root, ".tmp")));
    }
}

/// <summary>The same contract against OpenStack Swift's S3 API, through the Minio SDK and presigned URLs.</summary>
[Collection(SwiftCollection.Name)]
public sealed class S3ObjectStoreTests(SwiftServer swift) : ObjectStoreContractTests, IAsyncLifetime
{
    private S3ObjectStore? _store;

    protected override IObjectStore Store => _store!;

    public async Task InitializeAsync() => _store = await swift.CreateStoreAsync();

    public Task DisposeAsync()
    {
        _store?.Dispose();
        return Task.CompletedTask;
    }

    [Fact]
    public async Task Check_WrongSecret_FailsNamingTheSetting()
    {
        using var store = new S3ObjectStore(Microsoft.Extensions.Options.Options.Create(swift.Options(secret: "wrong")),
            Microsoft.Extensions.Logging.Abstractions.NullLogger<S3ObjectStore>.Instance);
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => store.CheckAsync(CancellationToken.None));
        Assert.Contains("Storage:S3:SecretKey", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task PresignedGet_ServesRangesWithoutCredentials_AndTamperingIsRefused()
    {
        await Store.PutAsync("packs/p1", Enumerable.Range(0, 256).Select(i => (byte)i).ToArray(), CancellationToken.None);
        var url = await _store!.PresignGetAsync("packs/p1");
        using var http = new HttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        request.Headers.Range = new System.Net.Http.Headers.RangeHeaderValue(10, 19);
        using var response = await http.SendAsync(request);
        Assert.Equal(System.Net.HttpStatusCode.PartialContent, response.StatusCode);
        Assert.Equal(Enumerable.Range(10, 10).Select(i => (byte)i).ToArray(), await response.Content.ReadAsByteArrayAsync());
        using var tampered = await http.GetAsync(url.Replace("packs/p1", "packs/p2", StringComparison.Ordinal));
        Assert.Equal(System.Net.HttpStatusCode.Forbidden, tampered.StatusCode);
    }

    [Fact]
    public async Task Unreachable_ThrowsStoreUnavailable()
    {
        var options = swift.Options();
        options.S3.Endpoint = new Uri($"http://127.0.0.1:{TestPaths.FreePort()}");
        using var store = new S3ObjectStore(Microsoft.Extensions.Options.Options.Create(options),
            Microsoft.Extensions.Logging.Abstractions.NullLogger<S3ObjectStore>.Instance);
        await Assert.ThrowsAsync<ObjectStoreUnavailableException>(() => store.PutAsync("catalog/x", new byte[] { 1 }, CancellationToken.None));
    }
}
