using Microsoft.AspNetCore.Authentication;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// At start and every six hours: deletes expired browser sessions and expired enrollment tokens from the
/// state database, so neither accumulates (nothing would accept them anyway). On the leader only.
/// </summary>
public sealed partial class AuthHousekeeping(SessionTicketStore sessions, EnrollmentStore enrollments, LoginThrottle logins, State.LeaderLease leader, TimeProvider time,
    ILogger<AuthHousekeeping> logger)
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await leader.FirstRound.WaitAsync(stoppingToken);
        using var timer = new PeriodicTimer(TimeSpan.FromHours(6), time);
        do
        {
            if (!leader.IsLeader)
                continue; // singleton work: the leader prunes for every replica
            try
            {
                var now = time.GetUtcNow();
                var sessionsRemoved = await sessions.PruneAsync(now, stoppingToken);
                var enrollmentsRemoved = await enrollments.PruneAsync(now, stoppingToken);
                await logins.PruneAsync(now, stoppingToken);
                if (sessionsRemoved + enrollmentsRemoved > 0)
                    Log.Pruned(logger, sessionsRemoved, enrollmentsRemoved);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                Log.Failed(logger, ex);
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Removed {Sessions} expired sessions and {Enrollments} expired enrollment tokens")]
        public static partial void Pruned(ILogger logger, int sessions, int enrollments);

        [LoggerMessage(2, LogLevel.Warning, "Auth housekeeping failed; will retry")]
        public static partial void Failed(ILogger logger, Exception exception);
    }
}
