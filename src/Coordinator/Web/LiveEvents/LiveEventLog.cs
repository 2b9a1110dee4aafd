using Dapper;
using MsdFleet.Coordinator.State;

namespace MsdFleet.Coordinator.Web;

/// <summary>
/// The live events in the state database: one sequence for every replica, so <c>Last-Event-ID</c> from
/// one replica means the same position on another, and on this one after a restart.
/// <para>
/// Ordering: <see cref="AppendAsync"/> takes its numbers from the single <c>live_event_counter</c> row with
/// <c>UPDATE … RETURNING</c>; the row lock is held until the transaction commits, so appends commit in
/// sequence order and <see cref="ReadAfterAsync"/> never sees N while a smaller number is still uncommitted.
/// </para>
/// </summary>
public sealed class LiveEventLog(StateDatabase db)
{
    /// <summary>How many events are kept (the leader prunes older ones); a client further behind is told to reload.</summary>
    public const long Retained = 100_000;

    public sealed record Stored(long Seq, string Type, string Payload);

    /// <summary>Appends the events in order; returns the sequence number of the last.</summary>
    public Task<long> AppendAsync(IReadOnlyList<(string Type, string Payload)> events, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(events);
        if (events.Count == 0)
            throw new ArgumentException("Nothing to append.", nameof(events));
        return db.WriteAsync(async (c, t) =>
        {
            var last = await c.ExecuteScalarAsync<long>(new CommandDefinition(
                "UPDATE live_event_counter SET last = last + @n WHERE id = 1 RETURNING last", new { n = (long)events.Count }, t, cancellationToken: cancellationToken));
            var first = last - events.Count + 1;
            var at = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            await c.ExecuteAsync(new CommandDefinition("INSERT INTO live_events (seq, type, payload, at_ms) VALUES (@seq, @type, @payload, @at)",
                events.Select((e, i) => new { seq = first + i, type = e.Type, payload = e.Payload, at }), t, cancellationToken: cancellationToken));
            if (db.IsPostgres)
            {
                await c.ExecuteAsync(new CommandDefinition("SELECT pg_notify(@channel, @payload)",
                    new { channel = StateNotifications.EventsChannel, payload = last.ToString(System.Globalization.CultureInfo.InvariantCulture) }, t,
                    cancellationToken: cancellationToken));
            }
            return last;
        }, cancellationToken);
    }

    /// <summary>Events after <paramref name="seq"/>, oldest first, at most <paramref name="limit"/>.</summary>
    public async Task<IReadOnlyList<Stored>> ReadAfterAsync(long seq, int limit, CancellationToken cancellationToken) =>
        (await db.ReadAsync(c => c.QueryAsync<Stored>(new CommandDefinition(
            "SELECT seq AS Seq, type AS Type, payload AS Payload FROM live_events WHERE seq > @seq ORDER BY seq LIMIT @limit",
            new { seq, limit }, cancellationToken: cancellationToken)), cancellationToken)).AsList();

    /// <summary>The newest sequence number handed out (0 before the first event).</summary>
    public Task<long> LastAsync(CancellationToken cancellationToken) =>
        db.ReadAsync(c => c.ExecuteScalarAsync<long>(new CommandDefinition(
            "SELECT last FROM live_event_counter WHERE id = 1", cancellationToken: cancellationToken)), cancellationToken);

    /// <summary>Drops all but the newest <paramref name="keep"/> events; returns how many went.</summary>
    public Task<int> PruneAsync(long keep, CancellationToken cancellationToken) =>
        db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition(
            "DELETE FROM live_events WHERE seq <= (SELECT last FROM live_event_counter WHERE id = 1) - @keep", new { keep }, t,
            cancellationToken: cancellationToken)), cancellationToken);
}
