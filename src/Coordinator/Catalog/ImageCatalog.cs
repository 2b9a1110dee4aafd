using System.Text.Json;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// Name → digest mapping and manifest access, persisted in the object store under <c>catalog/</c> and
/// <c>manifests/sha256/</c>. Name changes are serialized in-process so that "409 unless replace" holds
/// between concurrent uploads of the same name.
/// </summary>
public sealed class ImageCatalog(IObjectStore store) : IDisposable
{
    private const int MaxEntryBytes = 64 * 1024;
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly SemaphoreSlim _nameLock = new(1, 1);

    public async Task<CatalogEntry?> GetAsync(string name, CancellationToken cancellationToken)
    {
        var bytes = await store.GetBytesAsync(ObjectKeys.Catalog(name), MaxEntryBytes, cancellationToken);
        return bytes is null ? null : JsonSerializer.Deserialize<CatalogEntry>(bytes, Json);
    }

    public async Task<IReadOnlyList<CatalogEntry>> ListAsync(CancellationToken cancellationToken)
    {
        var entries = new List<CatalogEntry>();
        await foreach (var key in store.ListAsync(ObjectKeys.CatalogPrefix, cancellationToken))
        {
            var bytes = await store.GetBytesAsync(key, MaxEntryBytes, cancellationToken);
            if (bytes is not null)
                entries.Add(JsonSerializer.Deserialize<CatalogEntry>(bytes, Json)!);
        }
        return entries.OrderBy(e => e.Name, StringComparer.Ordinal).ToList();
    }

    /// <summary>Commits an entry whose manifest and chunks are already durable.</summary>
    public async Task CommitAsync(CatalogEntry entry, bool replace, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        await _nameLock.WaitAsync(cancellationToken);
        try
        {
            if (!replace && await GetAsync(entry.Name, cancellationToken) is not null)
                throw ImageExists(entry.Name);
            await store.PutAsync(ObjectKeys.Catalog(entry.Name), JsonSerializer.SerializeToUtf8Bytes(entry, Json), cancellationToken);
            await store.FlushAsync(cancellationToken);
        }
        finally
        {
            _nameLock.Release();
        }
        Changed?.Invoke(entry.Name, "committed");
    }

    /// <summary>Raised after a name was committed or deleted (name, "committed" | "deleted").</summary>
    public event Action<string, string>? Changed;

    public async Task<bool> DeleteAsync(string name, CancellationToken cancellationToken)
    {
        await _nameLock.WaitAsync(cancellationToken);
        try
        {
            var deleted = await store.DeleteAsync(ObjectKeys.Catalog(name), cancellationToken);
            await store.FlushAsync(cancellationToken);
            if (deleted)
                Changed?.Invoke(name, "deleted");
            return deleted;
        }
        finally
        {
            _nameLock.Release();
        }
    }

    /// <summary>The manifest's exact bytes (whose SHA-256 is the digest), or null when unknown.</summary>
    public Task<byte[]?> GetManifestBytesAsync(ImageDigest digest, CancellationToken cancellationToken) =>
        store.GetBytesAsync(ObjectKeys.Manifest(digest), ImageManifest.MaxEncodedBytes, cancellationToken);

    public async Task<ImageManifest?> GetManifestAsync(ImageDigest digest, CancellationToken cancellationToken)
    {
        var bytes = await GetManifestBytesAsync(digest, cancellationToken);
        return bytes is null ? null : ImageManifest.Parse(bytes);
    }

    public void Dispose() => _nameLock.Dispose();

    public static ApiException ImageExists(string name) =>
        ApiException.Conflict("image-exists", $"An image named '{name}' already exists; upload with ?replace=true to replace it.");
}
