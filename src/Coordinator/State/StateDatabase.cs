using System.Data;
using System.Data.Common;
using Dapper;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Options;
using Npgsql;

namespace MsdFleet.Coordinator.State;

/// <summary>
/// The control-plane database: SQLite (embedded default) or PostgreSQL (shared by replicas). Callers write
/// plain SQL through Dapper; the few places where the dialects differ are properties here.
///
/// How writes are made safe — the rule every store follows:
/// <list type="bullet">
/// <item>Every change runs in <see cref="WriteAsync{T}"/>: one transaction, committed or not at all.</item>
/// <item>SQLite: the transaction is <c>BEGIN IMMEDIATE</c>, so it holds the database's single write lock
///   from its first statement; write transactions run one at a time (SQLite is for one Coordinator).</item>
/// <item>PostgreSQL: READ COMMITTED, and a transaction that reads a row in order to change it locks that
///   row first (<see cref="ForUpdate"/>, or an <c>UPDATE … RETURNING</c> that bumps a counter in place), so
///   two replicas changing the same thing serialize on the row, never on a process lock. A deadlock or
///   serialization failure is retried from the start.</item>
/// </list>
/// </summary>
public sealed class StateDatabase
{
    private const int MaxAttempts = 5;
    private readonly string _connectionString;

    public StateDatabase(IOptions<StateOptions> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        IsPostgres = options.Value.IsPostgres;
        if (IsPostgres)
        {
            _connectionString = options.Value.ConnectionString;
            return;
        }
        var sqlite = new SqliteConnectionStringBuilder(options.Value.ConnectionString)
        {
            DefaultTimeout = 30,
            ForeignKeys = true,
            Pooling = true,
        };
        if (sqlite.Mode != SqliteOpenMode.Memory && Path.GetDirectoryName(Path.GetFullPath(sqlite.DataSource)) is { } folder)
            Directory.CreateDirectory(folder);
        _connectionString = sqlite.ToString();
        Location = Path.GetFullPath(sqlite.DataSource);
    }

    public bool IsPostgres { get; }

    /// <summary>The SQLite file, for messages; null on PostgreSQL.</summary>
    public string? Location { get; }

    /// <summary>Appended to a SELECT that reads a row in order to change it (row lock on PostgreSQL; SQLite's write lock is already held).</summary>
    public string ForUpdate => IsPostgres ? " FOR UPDATE" : string.Empty;

    /// <summary>
    /// The database server's clock in Unix milliseconds, as an SQL expression: leases compare against one
    /// clock, the database's, so replicas whose clocks disagree still agree on who holds a lease.
    /// </summary>
    public string NowMs => IsPostgres
        ? "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
        : "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

    /// <summary>A 64-bit primary key the database numbers in insertion order.</summary>
    public string IdentityColumn => IsPostgres ? "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY" : "INTEGER PRIMARY KEY AUTOINCREMENT";

    /// <summary>The column type of raw bytes.</summary>
    public string BlobType => IsPostgres ? "BYTEA" : "BLOB";

    public async Task<DbConnection> OpenAsync(CancellationToken cancellationToken)
    {
        DbConnection connection = IsPostgres ? new NpgsqlConnection(_connectionString) : new SqliteConnection(_connectionString);
        try
        {
            await connection.OpenAsync(cancellationToken);
            if (!IsPostgres)
            {
                // WAL: readers never wait for the writer; FULL: a commit survives a power cut once it returned.
                await connection.ExecuteAsync("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;");
            }
            return connection;
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
    }

    public async Task<T> ReadAsync<T>(Func<DbConnection, Task<T>> read, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(read);
        await using var connection = await OpenAsync(cancellationToken);
        return await read(connection);
    }

    /// <summary>Runs <paramref name="write"/> in one transaction (see the class comment); retried whole on a deadlock.</summary>
    public async Task<T> WriteAsync<T>(Func<DbConnection, DbTransaction, Task<T>> write, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(write);
        for (var attempt = 1; ; attempt++)
        {
            await using var connection = await OpenAsync(cancellationToken);
            await using var transaction = connection is SqliteConnection sqlite
                ? sqlite.BeginTransaction(IsolationLevel.Serializable, deferred: false) // BEGIN IMMEDIATE
                : await connection.BeginTransactionAsync(IsolationLevel.ReadCommitted, cancellationToken);
            try
            {
                var result = await write(connection, transaction);
                await transaction.CommitAsync(cancellationToken);
                return result;
            }
            catch (PostgresException ex) when (attempt < MaxAttempts && ex.SqlState is PostgresErrorCodes.SerializationFailure or PostgresErrorCodes.DeadlockDetected)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(10 * attempt * Random.Shared.Next(1, 5)), cancellationToken);
            }
        }
    }

    public Task WriteAsync(Func<DbConnection, DbTransaction, Task> write, CancellationToken cancellationToken) =>
        WriteAsync(async (c, t) =>
        {
            await write(c, t);
            return true;
        }, cancellationToken);

    /// <summary>
    /// True when <paramref name="ex"/> says the database cannot be reached or is not accepting work (server
    /// down, connection refused or lost, too many connections, SQLite busy past its timeout) — a 503, not a bug.
    /// </summary>
    public static bool IsUnavailable(Exception ex) => ex switch
    {
        PostgresException pg => pg.SqlState.StartsWith("08", StringComparison.Ordinal) || pg.SqlState.StartsWith("57P", StringComparison.Ordinal)
            || pg.SqlState is PostgresErrorCodes.TooManyConnections or PostgresErrorCodes.CannotConnectNow,
        NpgsqlException npgsql => npgsql.IsTransient || npgsql.InnerException is System.Net.Sockets.SocketException or IOException or TimeoutException,
        SqliteException { SqliteErrorCode: 5 or 6 } => true, // SQLITE_BUSY, SQLITE_LOCKED
        _ => ex.InnerException is { } inner && IsUnavailable(inner),
    };

    /// <summary>True for a unique-key violation, on either database.</summary>
    public static bool IsUniqueViolation(Exception ex) =>
        ex is PostgresException { SqlState: PostgresErrorCodes.UniqueViolation }
        || ex is SqliteException { SqliteErrorCode: 19, SqliteExtendedErrorCode: 1555 or 2067 };
}
