using Npgsql;

namespace MsdFleet.Coordinator.State;

/// <summary>
/// Cross-replica change notifications over PostgreSQL <c>LISTEN</c>/<c>NOTIFY</c>. A writer calls
/// <c>pg_notify(channel, payload)</c> inside its transaction (delivered only if it commits); every replica
/// listens on one dedicated connection and hands each notification to its subscribers. After the listening
/// connection was lost (and at the first connect) <see cref="Resynchronize"/> is raised instead: a
/// subscriber then re-reads everything, since notifications sent meanwhile are gone.
/// SQLite serves one Coordinator, which sees its own writes: nothing to listen to.
/// </summary>
public sealed partial class StateNotifications(StateDatabase db, ILogger<StateNotifications> logger) : BackgroundService
{
    /// <summary>Payload: an agent id whose desired state changed.</summary>
    public const string DesiredChannel = "msdfleet_desired";

    /// <summary>Payload: <c>committed|deleted</c>, the sending process's origin id and the image name, space-separated.</summary>
    public const string CatalogChannel = "msdfleet_catalog";

    /// <summary>Payload: the newest live-event sequence number committed.</summary>
    public const string EventsChannel = "msdfleet_events";

    /// <summary>Payload: an agent id whose central labels changed.</summary>
    public const string LabelsChannel = "msdfleet_labels";

    private static readonly string[] Channels = [DesiredChannel, CatalogChannel, EventsChannel, LabelsChannel];

    /// <summary>Raised for each notification (channel, payload), on the listener's thread: keep it short.</summary>
    public event Action<string, string>? Received;

    /// <summary>Raised when notifications may have been missed; subscribers reload what they cache.</summary>
    public event Action? Resynchronize;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!db.IsPostgres)
            return;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await using var connection = (NpgsqlConnection)await db.OpenAsync(stoppingToken);
                connection.Notification += (_, e) => Received?.Invoke(e.Channel, e.Payload);
                foreach (var channel in Channels)
                {
                    await using var listen = new NpgsqlCommand($"LISTEN {channel}", connection);
                    await listen.ExecuteNonQueryAsync(stoppingToken);
                }
                Resynchronize?.Invoke();
                while (!stoppingToken.IsCancellationRequested)
                    await connection.WaitAsync(stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException or IOException)
            {
                Log.ListenFailed(logger, ex.Message);
                await Task.Delay(TimeSpan.FromSeconds(1), stoppingToken);
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Listening for other replicas' changes failed ({Reason}); retrying in 1 s")]
        public static partial void ListenFailed(ILogger logger, string reason);
    }
}
