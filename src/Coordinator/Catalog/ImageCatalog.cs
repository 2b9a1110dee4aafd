using System.Data.Common;
using System.Text.Json;
using Dapper;
using MsdFleet.Coordinator.State;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// Name → digest mapping in the state database (<c>catalog_images</c>, the entry as JSON beside its digest);
/// manifests stay in the object store under <c>manifests/sha256/</c>, immutable and content-addressed.
/// "409 unless replace" is one <c>INSERT … ON CONFLICT</c>, so it holds between replicas too.
/// </summary>
public sealed class ImageCatalog
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly StateDatabase db;
    private readonly IObjectStore store;
    private readonly TimeProvider time;
    /// <summary>Marks this process's own notifications, which it has already acted on.</summary>
    private readonly string _origin = Guid.NewGuid().ToString("N");

    public ImageCatalog(StateDatabase db, IObjectStore store, TimeProvider time, StateNotifications? notifications = null)
    {
        this.db = db;
        this.store = store;
        this.time = time;
        // Other replicas' commits and deletes, so live events and Home Assistant here hear of them too.
        if (notifications is not null)
            notifications.Received += (channel, payload) =>
            {
                if (channel == StateNotifications.CatalogChannel && payload.Split(' ', 3) is [var action, var origin, var name] && origin != _origin)
                    Changed?.Invoke(name, action);
            };
    }

    /// <summary>Tells other replicas (payload <c>action origin name</c>), inside the changing transaction: delivered only if it commits.</summary>
    private Task NotifyAsync(System.Data.Common.DbConnection c, System.Data.Common.DbTransaction t, string action, string name, CancellationToken cancellationToken) =>
        db.IsPostgres
            ? c.ExecuteAsync(new CommandDefinition("SELECT pg_notify(@channel, @payload)", new { channel = StateNotifications.CatalogChannel, payload = $"{action} {_origin} {name}" }, t,
                cancellationToken: cancellationToken))
            : Task.CompletedTask;

    public Task<CatalogEntry?> GetAsync(string name, CancellationToken cancellationToken) =>
        db.ReadAsync(async c => Parse(await c.QuerySingleOrDefaultAsync<string>(new CommandDefinition(
            "SELECT entry FROM catalog_images WHERE name = @name", new { name }, cancellationToken: cancellationToken))), cancellationToken);

    /// <summary>
    /// Reads an entry inside the caller's transaction and keeps it from being deleted until that transaction
    /// ends (a share lock on PostgreSQL; SQLite's write lock is already held).
    /// </summary>
    public async Task<CatalogEntry?> GetForShareAsync(DbConnection connection, DbTransaction transaction, string name, CancellationToken cancellationToken) =>
        Parse(await connection.QuerySingleOrDefaultAsync<string>(new CommandDefinition(
            $"SELECT entry FROM catalog_images WHERE name = @name{(db.IsPostgres ? " FOR SHARE" : string.Empty)}", new { name }, transaction, cancellationToken: cancellationToken)));

    public async Task<IReadOnlyList<CatalogEntry>> ListAsync(CancellationToken cancellationToken)
    {
        var rows = await db.ReadAsync(c => c.QueryAsync<string>(new CommandDefinition(
            "SELECT entry FROM catalog_images ORDER BY name", cancellationToken: cancellationToken)), cancellationToken);
        // Ordinal order whatever the database's collation.
        return rows.Select(r => Parse(r)!).OrderBy(e => e.Name, StringComparer.Ordinal).ToList();
    }

    /// <summary>Every digest some name points at (GC's roots).</summary>
    public Task<IReadOnlyList<string>> DigestsAsync(CancellationToken cancellationToken) =>
        db.ReadAsync<IReadOnlyList<string>>(async c => (await c.QueryAsync<string>(new CommandDefinition(
            "SELECT DISTINCT digest FROM catalog_images", cancellationToken: cancellationToken))).ToList(), cancellationToken);

    /// <summary>Commits an entry whose manifest and chunks are already durable.</summary>
    public async Task CommitAsync(CatalogEntry entry, bool replace, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        var row = new { name = entry.Name, digest = entry.Digest, entry = JsonSerializer.Serialize(entry, Json), nowMs = time.GetUtcNow().ToUnixTimeMilliseconds() };
        await db.WriteAsync(async (c, t) =>
        {
            var stored = await c.ExecuteAsync(new CommandDefinition(
                "INSERT INTO catalog_images (name, digest, entry, committed_at_ms) VALUES (@name, @digest, @entry, @nowMs) ON CONFLICT (name) " +
                (replace ? "DO UPDATE SET digest = excluded.digest, entry = excluded.entry, committed_at_ms = excluded.committed_at_ms" : "DO NOTHING"),
                row, t, cancellationToken: cancellationToken));
            if (stored == 0)
                throw ImageExists(entry.Name);
            await NotifyAsync(c, t, "committed", entry.Name, cancellationToken);
        }, cancellationToken);
        Changed?.Invoke(entry.Name, "committed");
    }

    /// <summary>Raised after a name was committed or deleted (name, "committed" | "deleted").</summary>
    public event Action<string, string>? Changed;

    /// <summary>
    /// Deletes a name unless some desired state uses its digest. The entry's row is locked first, and a
    /// drive assignment reads the entry with <see cref="GetForShareAsync"/> in its own transaction, so a
    /// concurrent assignment either commits before this check sees it, or finds the name gone.
    /// </summary>
    /// <returns>The deleted entry.</returns>
    public async Task<CatalogEntry> DeleteUnusedAsync(string name, CancellationToken cancellationToken)
    {
        var entry = await db.WriteAsync(async (c, t) =>
        {
            var entry = Parse(await c.QuerySingleOrDefaultAsync<string>(new CommandDefinition(
                $"SELECT entry FROM catalog_images WHERE name = @name{db.ForUpdate}", new { name }, t, cancellationToken: cancellationToken)))
                ?? throw CatalogEndpoints.ImageNotFound(name);
            var users = await Fleet.DesiredStateStore.UsersAsync(c, t, entry.Digest, cancellationToken);
            if (users.Count > 0)
                throw ApiException.Conflict("image-in-use", $"Image '{name}' is in the desired state of {string.Join(", ", users)} (on a drive, or staged); change those drives (or DELETE /api/v1/agents/{{id}}/staged/{name}) first.");
            await c.ExecuteAsync(new CommandDefinition("DELETE FROM catalog_images WHERE name = @name", new { name }, t, cancellationToken: cancellationToken));
            await NotifyAsync(c, t, "deleted", name, cancellationToken);
            return entry;
        }, cancellationToken);
        Changed?.Invoke(name, "deleted");
        return entry;
    }

    /// <summary>The manifest's exact bytes (whose SHA-256 is the digest), or null when unknown.</summary>
    public Task<byte[]?> GetManifestBytesAsync(ImageDigest digest, CancellationToken cancellationToken) =>
        store.GetBytesAsync(ObjectKeys.Manifest(digest), ImageManifest.MaxEncodedBytes, cancellationToken);

    public async Task<ImageManifest?> GetManifestAsync(ImageDigest digest, CancellationToken cancellationToken)
    {
        var bytes = await GetManifestBytesAsync(digest, cancellationToken);
        return bytes is null ? null : ImageManifest.Parse(bytes);
    }

    public static ApiException ImageExists(string name) =>
        ApiException.Conflict("image-exists", $"An image named '{name}' already exists; upload with ?replace=true to replace it.");

    private static CatalogEntry? Parse(string? json) => json is null ? null : JsonSerializer.Deserialize<CatalogEntry>(json, Json);
}
