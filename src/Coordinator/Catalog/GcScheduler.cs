using Dapper;
using MsdFleet.Coordinator.State;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// Runs garbage collection on the elected leader only: every <see cref="Interval"/>, and within seconds of
/// a request made on any replica (<see cref="RequestAsync"/> leaves a flag in the state database that the
/// leader takes with one <c>DELETE … RETURNING</c>).
/// </summary>
public sealed partial class GcScheduler(GarbageCollector gc, LeaderLease leader, StateDatabase db, TimeProvider time, ILogger<GcScheduler> logger)
    : BackgroundService
{
    public static readonly TimeSpan Interval = TimeSpan.FromHours(1);
    private const string RequestKey = "gc-requested";

    /// <summary>Asks the leader to collect soon (used when the request reached another replica).</summary>
    public Task RequestAsync(CancellationToken cancellationToken) =>
        db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition(
            "INSERT INTO state_meta (key, value) VALUES (@key, @value) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            new { key = RequestKey, value = time.GetUtcNow().ToString("O") }, t, cancellationToken: cancellationToken)), cancellationToken);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await leader.FirstRound.WaitAsync(stoppingToken);
        var next = time.GetUtcNow() + TimeSpan.FromMinutes(1); // first run soon after start, not during it
        using var timer = new PeriodicTimer(LeaderLease.RenewEvery, time);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            if (!leader.IsLeader)
                continue;
            try
            {
                var requested = await db.WriteAsync((c, t) => c.QuerySingleOrDefaultAsync<string?>(new CommandDefinition(
                    "DELETE FROM state_meta WHERE key = @key RETURNING value", new { key = RequestKey }, t, cancellationToken: stoppingToken)), stoppingToken);
                if (requested is null && time.GetUtcNow() < next)
                    continue;
                next = time.GetUtcNow() + Interval;
                await gc.CollectAsync(stoppingToken);
            }
            catch (NotLeaderException ex)
            {
                Log.Stopped(logger, ex.Message);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                Log.Failed(logger, ex);
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Garbage collection stopped: {Reason}")]
        public static partial void Stopped(ILogger logger, string reason);

        [LoggerMessage(2, LogLevel.Warning, "Garbage collection failed; the next round retries")]
        public static partial void Failed(ILogger logger, Exception exception);
    }
}
