using System.Text.Json;
using Dapper;
using MsdFleet.Coordinator.Catalog;
using MsdFleet.Coordinator.Fleet;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.Coordinator.State;

/// <summary>
/// Before the first request: migrates the state database, imports what an earlier version kept in the
/// object store (once, in one transaction — a crash mid-import leaves nothing and it runs again), and
/// loads desired state. Hosted services start before the server listens, so nothing is served from a
/// half-loaded state.
/// </summary>
public sealed partial class StateStartupService(
    StateDatabase db, IObjectStore store, DesiredStateStore desired, TimeProvider time, ILogger<StateStartupService> logger) : IHostedService
{
    private const string ImportKey = "imported-object-store-v1";
    private const int MaxEntryBytes = 64 * 1024;
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        try
        {
            var applied = await StateMigrations.ApplyAsync(db, cancellationToken);
            if (applied.Count > 0)
                Log.Migrated(logger, db.IsPostgres ? "PostgreSQL" : $"SQLite {db.Location}", string.Join(", ", applied));
        }
        catch (Exception ex) when (ex is System.Data.Common.DbException or IOException or UnauthorizedAccessException)
        {
            throw new InvalidOperationException(
                $"The state database ({(db.IsPostgres ? "PostgreSQL" : $"SQLite {db.Location}")}) cannot be opened: {ex.Message}. Check State:Provider and State:ConnectionString.", ex);
        }
        await ImportFromObjectStoreAsync(cancellationToken);
        await desired.LoadAsync(cancellationToken);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private async Task ImportFromObjectStoreAsync(CancellationToken cancellationToken)
    {
        var nowMs = time.GetUtcNow().ToUnixTimeMilliseconds();
        var (images, agents) = await db.WriteAsync(async (c, t) =>
        {
            // The marker row is written first: a second replica importing at the same moment waits on it and then skips.
            var first = await c.ExecuteAsync(new CommandDefinition(
                "INSERT INTO state_meta (key, value) VALUES (@key, @value) ON CONFLICT (key) DO NOTHING",
                new { key = ImportKey, value = nowMs.ToString(System.Globalization.CultureInfo.InvariantCulture) }, t, cancellationToken: cancellationToken));
            if (first == 0)
                return (0, 0);
            var images = 0;
            await foreach (var key in store.ListAsync(ObjectKeys.CatalogPrefix, cancellationToken))
            {
                var bytes = await store.GetBytesAsync(key, MaxEntryBytes, cancellationToken);
                if (bytes is null || JsonSerializer.Deserialize<CatalogEntry>(bytes, Json) is not { } entry)
                    continue;
                images += await c.ExecuteAsync(new CommandDefinition(
                    "INSERT INTO catalog_images (name, digest, entry, committed_at_ms) VALUES (@name, @digest, @entry, @at) ON CONFLICT (name) DO NOTHING",
                    new { name = entry.Name, digest = entry.Digest, entry = JsonSerializer.Serialize(entry, Json), at = entry.CreatedAt.ToUnixTimeMilliseconds() },
                    t, cancellationToken: cancellationToken));
            }
            var agents = 0;
            await foreach (var key in store.ListAsync(ObjectKeys.DesiredPrefix, cancellationToken))
            {
                var bytes = await store.GetBytesAsync(key, ProtocolSerializer.MaxMessageBytes, cancellationToken);
                if (bytes is null)
                    continue;
                var agentId = key[ObjectKeys.DesiredPrefix.Length..];
                var state = ProtocolSerializer.Deserialize<DesiredState>(bytes);
                var inserted = await c.ExecuteAsync(new CommandDefinition(
                    "INSERT INTO desired_states (agent_id, generation, state, updated_at_ms) VALUES (@agentId, @generation, @bytes, @nowMs) ON CONFLICT (agent_id) DO NOTHING",
                    new { agentId, generation = state.Generation, bytes, nowMs }, t, cancellationToken: cancellationToken));
                if (inserted == 0)
                    continue;
                agents++;
                foreach (var drive in state.Drives.Where(d => d.ImageDigest is not null))
                    await c.ExecuteAsync(new CommandDefinition("INSERT INTO desired_drives (agent_id, drive, digest) VALUES (@agentId, @index, @digest)",
                        new { agentId, index = drive.Index, digest = drive.ImageDigest }, t, cancellationToken: cancellationToken));
            }
            return (images, agents);
        }, cancellationToken);
        if (images + agents > 0)
            Log.Imported(logger, images, agents);
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "State database {Database}: applied schema migrations {Versions}")]
        public static partial void Migrated(ILogger logger, string database, string versions);

        [LoggerMessage(2, LogLevel.Information, "Imported from the object store written by an earlier version: {Images} catalog names, desired state of {Agents} agents")]
        public static partial void Imported(ILogger logger, int images, int agents);
    }
}
