using Dapper;

namespace MsdFleet.Coordinator.State;

/// <summary>
/// One elected leader among the replicas, for work that must run once (GC, pruning; the rollout engine
/// next): a lease row in the state database, taken when it is free or expired and renewed by its holder
/// every <see cref="RenewEvery"/>. Expiry is judged by the database's clock (<see cref="StateDatabase.NowMs"/>),
/// so it works inside and outside Kubernetes and whatever the replicas' clocks say. A killed leader's lease
/// runs out after <see cref="Ttl"/> and the next renewal round of another replica takes it: replaced within
/// <c>Ttl + RenewEvery</c> (20 s). Each new holder gets a higher <see cref="Term"/>.
/// Before a destructive step, singleton work calls <see cref="EnsureLeaderAsync"/>, which asks the database
/// again, so a leader that stalled past its lease stops instead of racing its successor.
/// </summary>
public sealed partial class LeaderLease(StateDatabase db, ILogger<LeaderLease> logger, TimeSpan? ttl = null) : BackgroundService
{
    public const string Name = "leader";
    public static readonly TimeSpan DefaultTtl = TimeSpan.FromSeconds(15);
    public static readonly TimeSpan RenewEvery = TimeSpan.FromSeconds(5);

    /// <summary>How long a lease lasts without renewal (shorter only in tests).</summary>
    public TimeSpan Ttl { get; } = ttl ?? DefaultTtl;

    private readonly TaskCompletionSource _firstRound = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _isLeader;

    /// <summary>This replica's identity in the lease: host name and process id, plus a random part.</summary>
    public string Holder { get; } = $"{Environment.MachineName}/{Environment.ProcessId}/{Guid.NewGuid().ToString("N")[..8]}";

    /// <summary>Whether the last renewal round made or kept this replica the leader.</summary>
    public bool IsLeader => _isLeader;

    public long Term { get; private set; }

    /// <summary>Completes after the first round, won or lost (so singleton work does not start before it knows).</summary>
    public Task FirstRound => _firstRound.Task;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(RenewEvery);
        do
        {
            try
            {
                await RenewAsync(stoppingToken);
            }
            catch (Exception ex) when (ex is System.Data.Common.DbException or TimeoutException or InvalidOperationException)
            {
                if (_isLeader)
                    Log.Lost(logger, Holder, ex.Message);
                _isLeader = false;
            }
            _firstRound.TrySetResult();
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    /// <summary>A replica that stops cleanly hands the lease back, so the next one takes over at its next round, not after the TTL.</summary>
    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        if (!_isLeader)
            return;
        _isLeader = false;
        try
        {
            await db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition("DELETE FROM leases WHERE name = @name AND holder = @holder",
                new { name = Name, holder = Holder }, t, cancellationToken: cancellationToken)), cancellationToken);
        }
        catch (Exception ex) when (ex is System.Data.Common.DbException or OperationCanceledException)
        {
            Log.Lost(logger, Holder, $"could not hand the lease back at stop ({ex.Message}); it expires by itself");
        }
    }

    /// <summary>Takes the lease if it is free or expired, renews it if this replica holds it; one statement.</summary>
    public async Task<bool> RenewAsync(CancellationToken cancellationToken)
    {
        var term = await db.WriteAsync((c, t) => c.QuerySingleOrDefaultAsync<long?>(new CommandDefinition($"""
            INSERT INTO leases (name, holder, expires_at_ms, term) VALUES (@name, @holder, {db.NowMs} + @ttl, 1)
            ON CONFLICT (name) DO UPDATE SET
                term = CASE WHEN leases.holder = excluded.holder THEN leases.term ELSE leases.term + 1 END,
                holder = excluded.holder,
                expires_at_ms = excluded.expires_at_ms
            WHERE leases.holder = excluded.holder OR leases.expires_at_ms < {db.NowMs}
            RETURNING term
            """, new { name = Name, holder = Holder, ttl = (long)Ttl.TotalMilliseconds }, t, cancellationToken: cancellationToken)), cancellationToken);
        var was = _isLeader;
        _isLeader = term is not null;
        if (term is { } won)
            Term = won;
        if (_isLeader && !was)
            Log.Elected(logger, Holder, Term);
        else if (!_isLeader && was)
            Log.Lost(logger, Holder, "another replica holds the lease");
        return _isLeader;
    }

    /// <summary>Throws unless this replica holds an unexpired lease right now, by the database's clock.</summary>
    public async Task EnsureLeaderAsync(CancellationToken cancellationToken)
    {
        var holds = await db.ReadAsync(c => c.ExecuteScalarAsync<long>(new CommandDefinition(
            $"SELECT COUNT(*) FROM leases WHERE name = @name AND holder = @holder AND expires_at_ms > {db.NowMs}",
            new { name = Name, holder = Holder }, cancellationToken: cancellationToken)), cancellationToken) > 0;
        if (!holds)
        {
            _isLeader = false;
            throw new NotLeaderException($"This replica ({Holder}) no longer holds the leader lease; the singleton work stopped before its next step.");
        }
    }

    /// <summary>The current holder, if the lease is unexpired.</summary>
    public Task<string?> CurrentHolderAsync(CancellationToken cancellationToken) =>
        db.ReadAsync(c => c.QuerySingleOrDefaultAsync<string?>(new CommandDefinition(
            $"SELECT holder FROM leases WHERE name = @name AND expires_at_ms > {db.NowMs}", new { name = Name }, cancellationToken: cancellationToken)), cancellationToken);

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "This replica ({Holder}) is the leader now (term {Term})")]
        public static partial void Elected(ILogger logger, string holder, long term);

        [LoggerMessage(2, LogLevel.Warning, "This replica ({Holder}) is no longer the leader: {Reason}")]
        public static partial void Lost(ILogger logger, string holder, string reason);
    }
}

public sealed class NotLeaderException(string message) : InvalidOperationException(message);
