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
    StateDatabase db, IObjectStore store, DesiredStateStore desired, TimeProvider time, Microsoft.Extensions.Options.IOptions<ObjectStoreOptions> storeOptions,
    ILogger<StateStartupService> logger) : IHostedService
{
    private const string ImportKey = "imported-object-store-v1";
    private const string AuthImportKey = "imported-object-store-auth-v1";
    private const string AuditImportKey = "imported-object-store-audit-v1";
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
        var so = storeOptions.Value;
        await StoreBinding.CheckAsync(db, store, so.IsS3 ? $"S3 {so.S3.Endpoint} bucket {so.S3.Bucket}{(so.S3.Prefix.Length > 0 ? $" prefix {so.S3.Prefix}" : "")}"
            : $"filesystem {Path.GetFullPath(so.Path)}", cancellationToken);
        await ImportFromObjectStoreAsync(cancellationToken);
        await ImportAuthFromObjectStoreAsync(cancellationToken);
        await ImportAuditFromObjectStoreAsync(cancellationToken);
        await desired.LoadAsync(cancellationToken);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private async Task ImportFromObjectStoreAsync(CancellationToken cancellationToken)
    {
        var nowMs = time.GetUtcNow().ToUnixTimeMilliseconds();
        var (images, agents) = await db.WriteAsync(async (c, t) =>
        {
            if (!await ClaimImportAsync(c, t, ImportKey, nowMs, cancellationToken))
                return (0, 0);
            var images = 0;
            await foreach (var key in store.ListAsync(ObjectKeys.Legacy.CatalogPrefix, cancellationToken))
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
            await foreach (var key in store.ListAsync(ObjectKeys.Legacy.DesiredPrefix, cancellationToken))
            {
                var bytes = await store.GetBytesAsync(key, ProtocolSerializer.MaxMessageBytes, cancellationToken);
                if (bytes is null)
                    continue;
                var agentId = key[ObjectKeys.Legacy.DesiredPrefix.Length..];
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

    /// <summary>Users, API tokens, agent credentials, enrollment tokens, browser sessions and Home Assistant's broker login of an earlier version; once, in one transaction.</summary>
    private async Task ImportAuthFromObjectStoreAsync(CancellationToken cancellationToken)
    {
        var nowMs = time.GetUtcNow().ToUnixTimeMilliseconds();
        var counts = await db.WriteAsync(async (c, t) =>
        {
            if (!await ClaimImportAsync(c, t, AuthImportKey, nowMs, cancellationToken))
                return (0, 0, 0);
            var (users, tokens, agents) = (0, 0, 0);
            await foreach (var (key, bytes) in ObjectsAsync(ObjectKeys.Legacy.UsersPrefix, cancellationToken))
                if (JsonSerializer.Deserialize<Auth.UserRecord>(bytes, Json) is { } user)
                    users += await Auth.UserStore.UpsertAsync(c, t, user, cancellationToken, overwrite: false);
            await foreach (var (key, bytes) in ObjectsAsync(ObjectKeys.Legacy.TokensPrefix, cancellationToken))
                if (JsonSerializer.Deserialize<Auth.ApiTokenRecord>(bytes, Json) is { } token && await Auth.TokenStore.InsertAsync(c, t, key[ObjectKeys.Legacy.TokensPrefix.Length..], token, cancellationToken))
                    tokens++;
            await foreach (var (key, bytes) in ObjectsAsync(ObjectKeys.Legacy.AgentCredentialsPrefix, cancellationToken))
                if (JsonSerializer.Deserialize<Auth.AgentCredentialRecord>(bytes, Json) is { } agent)
                    agents += await Auth.AgentCredentialStore.UpsertAsync(c, t, agent, cancellationToken, overwrite: false);
            await foreach (var (key, bytes) in ObjectsAsync(ObjectKeys.Legacy.EnrollmentsPrefix, cancellationToken))
                if (JsonSerializer.Deserialize<Auth.EnrollmentRecord>(bytes, Json) is { } enrollment)
                    await Auth.EnrollmentStore.InsertAsync(c, t, key[ObjectKeys.Legacy.EnrollmentsPrefix.Length..], enrollment, cancellationToken);
            await foreach (var (key, bytes) in ObjectsAsync(ObjectKeys.Legacy.SessionsPrefix, cancellationToken))
                await c.ExecuteAsync(new CommandDefinition(
                    "INSERT INTO sessions (key_hash, ticket, expires_at_ms) VALUES (@hash, @bytes, @expires) ON CONFLICT (key_hash) DO NOTHING",
                    new { hash = Auth.SecretHash.HashHex(key[ObjectKeys.Legacy.SessionsPrefix.Length..]), bytes,
                          expires = Microsoft.AspNetCore.Authentication.TicketSerializer.Default.Deserialize(bytes)?.Properties.ExpiresUtc?.ToUnixTimeMilliseconds() },
                    t, cancellationToken: cancellationToken));
            if (await store.GetBytesAsync(ObjectKeys.Legacy.HomeAssistantCredentials, 64 * 1024, cancellationToken) is { } homeAssistant)
                await Integrations.HomeAssistantCredentials.UpsertAsync(c, t, System.Text.Encoding.UTF8.GetString(homeAssistant), overwrite: false, cancellationToken);
            return (users, tokens, agents);
        }, cancellationToken);
        var (users, tokens, agents) = counts;
        if (users + tokens + agents > 0)
            Log.ImportedAuth(logger, users, tokens, agents);
    }

    /// <summary>The audit entries of an earlier version (one object each, keys sortable by time), in time order; once.</summary>
    private async Task ImportAuditFromObjectStoreAsync(CancellationToken cancellationToken)
    {
        var nowMs = time.GetUtcNow().ToUnixTimeMilliseconds();
        var imported = await db.WriteAsync(async (c, t) =>
        {
            if (!await ClaimImportAsync(c, t, AuditImportKey, nowMs, cancellationToken))
                return 0;
            var keys = new List<string>();
            await foreach (var key in store.ListAsync(ObjectKeys.Legacy.AuditPrefix, cancellationToken))
                keys.Add(key);
            var count = 0;
            foreach (var key in keys.Order(StringComparer.Ordinal))
            {
                if (await store.GetBytesAsync(key, 64 * 1024, cancellationToken) is { } bytes && JsonSerializer.Deserialize<Auth.AuditEntry>(bytes, Json) is { } entry)
                    count += await Auth.AuditLog.InsertAsync(c, t, entry, cancellationToken);
            }
            return count;
        }, cancellationToken);
        if (imported > 0)
            Log.ImportedAudit(logger, imported);
    }

    /// <summary>
    /// Writes an import's marker row first, in the import's own transaction: true for the one replica that
    /// does the import; a second replica importing at the same moment waits on the row, then gets false and skips.
    /// </summary>
    private static async Task<bool> ClaimImportAsync(System.Data.Common.DbConnection c, System.Data.Common.DbTransaction t, string key, long nowMs,
        CancellationToken cancellationToken) =>
        await c.ExecuteAsync(new CommandDefinition(
            "INSERT INTO state_meta (key, value) VALUES (@key, @value) ON CONFLICT (key) DO NOTHING",
            new { key, value = nowMs.ToString(System.Globalization.CultureInfo.InvariantCulture) }, t, cancellationToken: cancellationToken)) > 0;

    private async IAsyncEnumerable<(string Key, byte[] Bytes)> ObjectsAsync(string prefix, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await foreach (var key in store.ListAsync(prefix, cancellationToken))
        {
            if (await store.GetBytesAsync(key, 256 * 1024, cancellationToken) is { } bytes)
                yield return (key, bytes);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "State database {Database}: applied schema migrations {Versions}")]
        public static partial void Migrated(ILogger logger, string database, string versions);

        [LoggerMessage(2, LogLevel.Information, "Imported from the object store written by an earlier version: {Images} catalog names, desired state of {Agents} agents")]
        public static partial void Imported(ILogger logger, int images, int agents);

        [LoggerMessage(3, LogLevel.Information, "Imported from the object store written by an earlier version: {Users} users, {Tokens} API tokens, {Agents} agent credentials")]
        public static partial void ImportedAuth(ILogger logger, int users, int tokens, int agents);

        [LoggerMessage(4, LogLevel.Information, "Imported {Entries} audit entries from the object store written by an earlier version")]
        public static partial void ImportedAudit(ILogger logger, int entries);
    }
}
