using System.Data.Common;
using Dapper;

namespace MsdFleet.Coordinator.State;

/// <summary>
/// Versioned schema migrations, applied in order at start inside one transaction each, and recorded in
/// <c>schema_migrations</c>. Replicas starting together serialize on a lock (PostgreSQL: a session advisory
/// lock; SQLite: its write lock), so each migration runs once. A database migrated by a newer Coordinator
/// is refused: this version would not know its tables.
/// Never edit a migration that has shipped; add the next one.
/// </summary>
public static class StateMigrations
{
    /// <summary>The advisory-lock key the migrating replica holds (any fixed 64-bit number; "msdfleet" in ASCII).</summary>
    private const long PostgresLockKey = 0x6d73_6466_6c65_6574;

    public sealed record Migration(int Version, string Name, Func<StateDatabase, string> Sql);

    public static IReadOnlyList<Migration> All { get; } =
    [
        new(1, "catalog and desired state", db => $"""
            CREATE TABLE catalog_images (
                name TEXT PRIMARY KEY,
                digest TEXT NOT NULL,
                entry TEXT NOT NULL,
                committed_at_ms BIGINT NOT NULL
            );
            CREATE INDEX catalog_images_digest ON catalog_images (digest);
            CREATE TABLE desired_states (
                agent_id TEXT PRIMARY KEY,
                generation BIGINT NOT NULL,
                state {db.BlobType} NOT NULL,
                published_generation BIGINT NOT NULL DEFAULT 0,
                updated_at_ms BIGINT NOT NULL
            );
            CREATE TABLE desired_drives (
                agent_id TEXT NOT NULL REFERENCES desired_states (agent_id) ON DELETE CASCADE,
                drive INTEGER NOT NULL,
                digest TEXT NOT NULL,
                PRIMARY KEY (agent_id, drive)
            );
            CREATE INDEX desired_drives_digest ON desired_drives (digest);
            CREATE TABLE state_meta (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL
            );
            """),
        new(2, "users, tokens, sessions, agent credentials, enrollment tokens", db => $"""
            CREATE TABLE api_tokens (
                hash TEXT PRIMARY KEY,
                id TEXT NOT NULL,
                owner TEXT,
                record TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL
            );
            CREATE UNIQUE INDEX api_tokens_id ON api_tokens (id);
            CREATE INDEX api_tokens_owner ON api_tokens (owner);
            CREATE TABLE agent_credentials (
                agent_id TEXT PRIMARY KEY,
                record TEXT NOT NULL
            );
            CREATE TABLE users (
                name TEXT PRIMARY KEY,
                record TEXT NOT NULL
            );
            CREATE TABLE sessions (
                key_hash TEXT PRIMARY KEY,
                ticket {db.BlobType} NOT NULL,
                expires_at_ms BIGINT
            );
            CREATE TABLE enrollment_tokens (
                hash TEXT PRIMARY KEY,
                id TEXT NOT NULL,
                record TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL,
                expires_at_ms BIGINT NOT NULL
            );
            CREATE UNIQUE INDEX enrollment_tokens_id ON enrollment_tokens (id);
            """),
        new(3, "leases", _ => """
            CREATE TABLE leases (
                name TEXT PRIMARY KEY,
                holder TEXT NOT NULL,
                expires_at_ms BIGINT NOT NULL,
                term BIGINT NOT NULL
            );
            """),
        new(4, "push sessions", db => $"""
            CREATE TABLE push_sessions (
                id TEXT PRIMARY KEY,
                manifest {db.BlobType} NOT NULL,
                owner TEXT,
                expires_at_ms BIGINT NOT NULL
            );
            """),
        new(5, "audit log", db => $"""
            CREATE TABLE audit_log (
                id {db.IdentityColumn},
                at_ms BIGINT NOT NULL,
                actor TEXT NOT NULL,
                role TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT NOT NULL,
                detail TEXT
            );
            CREATE INDEX audit_log_at ON audit_log (at_ms);
            CREATE INDEX audit_log_actor ON audit_log (actor, id);
            CREATE INDEX audit_log_target ON audit_log (target, id);
            """),
        new(6, "login failures", _ => """
            CREATE TABLE login_failures (
                name TEXT PRIMARY KEY,
                failures BIGINT NOT NULL,
                first_at_ms BIGINT NOT NULL
            );
            """),
        new(7, "import jobs", _ => """
            CREATE TABLE import_jobs (
                id TEXT PRIMARY KEY,
                url TEXT NOT NULL,
                name TEXT NOT NULL,
                sha256 TEXT,
                replace_existing INTEGER NOT NULL,
                state TEXT NOT NULL,
                runner TEXT,
                bytes_done BIGINT NOT NULL DEFAULT 0,
                bytes_total BIGINT,
                error TEXT,
                image TEXT,
                created_at_ms BIGINT NOT NULL,
                heartbeat_at_ms BIGINT NOT NULL
            );
            CREATE INDEX import_jobs_state ON import_jobs (state, created_at_ms);
            """),
        new(8, "integration credentials", _ => """
            CREATE TABLE integration_credentials (
                name TEXT PRIMARY KEY,
                record TEXT NOT NULL
            );
            """),
        new(9, "pack registry", db => $"""
            CREATE TABLE packs (
                seq {db.IdentityColumn},
                pack_id TEXT NOT NULL UNIQUE,
                created_at_ms BIGINT NOT NULL
            );
            """),
        // Live events with one sequence for all replicas. The counter row is the writers' lock: a writer
        // takes its numbers with UPDATE … RETURNING and holds the row until it commits, so events commit in
        // sequence order and a reader that has seen N has seen everything below N.
        new(10, "live events", _ => """
            CREATE TABLE live_events (
                seq BIGINT PRIMARY KEY,
                type TEXT NOT NULL,
                payload TEXT NOT NULL,
                at_ms BIGINT NOT NULL
            );
            CREATE TABLE live_event_counter (
                id INTEGER PRIMARY KEY,
                last BIGINT NOT NULL
            );
            INSERT INTO live_event_counter (id, last) VALUES (1, 0);
            """),
        new(11, "login attempts per address", _ => """
            CREATE TABLE login_attempts (
                address TEXT PRIMARY KEY,
                attempts BIGINT NOT NULL,
                first_at_ms BIGINT NOT NULL
            );
            """),
        new(12, "central agent labels", _ => """
            CREATE TABLE agent_labels (
                agent_id TEXT PRIMARY KEY,
                labels TEXT NOT NULL,
                updated_at_ms BIGINT NOT NULL
            );
            """),
        // Fleet tokens enroll up to max_devices; a one-device token is max 1. `used` is counted in the
        // claiming UPDATE, so devices racing on any replicas never exceed it.
        new(13, "enrollment tokens for many devices", _ => """
            ALTER TABLE enrollment_tokens ADD COLUMN max_devices BIGINT NOT NULL DEFAULT 1;
            ALTER TABLE enrollment_tokens ADD COLUMN used BIGINT NOT NULL DEFAULT 0;
            """),
        new(14, "rollouts", _ => """
            CREATE TABLE rollouts (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                spec TEXT NOT NULL,
                state TEXT NOT NULL,
                reason TEXT,
                revert INTEGER NOT NULL DEFAULT 0,
                created_by TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL,
                updated_at_ms BIGINT NOT NULL
            );
            CREATE INDEX rollouts_state ON rollouts (state);
            CREATE TABLE rollout_executions (
                rollout_id TEXT NOT NULL,
                agent_id TEXT NOT NULL,
                wave INTEGER NOT NULL,
                state TEXT NOT NULL,
                error TEXT,
                generation BIGINT,
                previous TEXT,
                started_at_ms BIGINT,
                updated_at_ms BIGINT NOT NULL,
                PRIMARY KEY (rollout_id, agent_id)
            );
            CREATE INDEX rollout_executions_agent ON rollout_executions (agent_id, state);
            """),
        // Streamed pushes (msdctl): the manifest arrives in parts, each declared before its chunks are sent, so the
        // client sends while it is still cutting; the commit assembles the manifest from the parts in order.
        new(15, "streamed pushes", db => $"""
            ALTER TABLE push_sessions ADD COLUMN streaming INTEGER NOT NULL DEFAULT 0;
            CREATE TABLE push_parts (
                session_id TEXT NOT NULL,
                part INTEGER NOT NULL,
                entries {db.BlobType} NOT NULL,
                PRIMARY KEY (session_id, part)
            );
            """),
    ];

    public static int LatestVersion => All[^1].Version;

    /// <returns>The versions applied now (empty when the schema was current).</returns>
    public static async Task<IReadOnlyList<int>> ApplyAsync(StateDatabase db, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(db);
        await using var connection = await db.OpenAsync(cancellationToken);
        if (db.IsPostgres)
            await connection.ExecuteAsync(new CommandDefinition("SELECT pg_advisory_lock(@key)", new { key = PostgresLockKey }, cancellationToken: cancellationToken));
        try
        {
            await connection.ExecuteAsync(new CommandDefinition(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)",
                cancellationToken: cancellationToken));
            var applied = new List<int>();
            foreach (var migration in All)
            {
                if (await ApplyOneAsync(db, connection, migration, cancellationToken))
                    applied.Add(migration.Version);
            }
            return applied;
        }
        finally
        {
            if (db.IsPostgres)
                await connection.ExecuteAsync("SELECT pg_advisory_unlock(@key)", new { key = PostgresLockKey });
        }
    }

    private static async Task<bool> ApplyOneAsync(StateDatabase db, DbConnection connection, Migration migration, CancellationToken cancellationToken)
    {
        await using var transaction = connection is Microsoft.Data.Sqlite.SqliteConnection sqlite
            ? sqlite.BeginTransaction(System.Data.IsolationLevel.Serializable, deferred: false)
            : await connection.BeginTransactionAsync(cancellationToken);
        var newest = await connection.ExecuteScalarAsync<int?>(new CommandDefinition(
            "SELECT MAX(version) FROM schema_migrations", transaction: transaction, cancellationToken: cancellationToken)) ?? 0;
        if (newest > LatestVersion)
            throw new InvalidOperationException(
                $"The state database is at schema version {newest}, newer than this Coordinator knows ({LatestVersion}): it was upgraded by a newer version. Run that version, or restore a backup taken before the upgrade.");
        var done = await connection.ExecuteScalarAsync<int>(new CommandDefinition(
            "SELECT COUNT(*) FROM schema_migrations WHERE version = @v", new { v = migration.Version }, transaction, cancellationToken: cancellationToken));
        if (done > 0)
            return false;
        await connection.ExecuteAsync(new CommandDefinition(migration.Sql(db), transaction: transaction, cancellationToken: cancellationToken));
        await connection.ExecuteAsync(new CommandDefinition(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (@v, @n, @t)",
            new { v = migration.Version, n = migration.Name, t = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() }, transaction, cancellationToken: cancellationToken));
        await transaction.CommitAsync(cancellationToken);
        return true;
    }
}
