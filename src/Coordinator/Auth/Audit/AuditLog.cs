using System.Security.Claims;
using System.Text;
using Dapper;
using MsdFleet.Coordinator.State;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// Who changed what, and when: every mutating API call records one row in <c>audit_log</c>, numbered by
/// the database in commit order, shared by all replicas and kept across restarts. Readable by admins
/// through <c>GET /api/v1/audit</c>, filtered by actor, action, target and time, in pages.
/// </summary>
public sealed class AuditLog(StateDatabase db, TimeProvider time)
{
    public const int MaxPage = 10_000;

    public Task RecordAsync(ClaimsPrincipal actor, string action, string target, string? detail, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(actor);
        var entry = new AuditEntry(time.GetUtcNow(), actor.Identity?.Name ?? "unknown", actor.FindFirstValue(ClaimTypes.Role) ?? "unknown", action, target, detail);
        return db.WriteAsync((c, t) => InsertAsync(c, t, entry, cancellationToken), cancellationToken);
    }

    /// <summary>Records inside the caller's transaction: the entry commits with the change it describes, or neither does.</summary>
    public Task RecordAsync(System.Data.Common.DbConnection c, System.Data.Common.DbTransaction t, ClaimsPrincipal actor, string action, string target, string? detail,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(actor);
        return InsertAsync(c, t, new AuditEntry(time.GetUtcNow(), actor.Identity?.Name ?? "unknown", actor.FindFirstValue(ClaimTypes.Role) ?? "unknown", action, target, detail),
            cancellationToken);
    }

    internal static Task<int> InsertAsync(System.Data.Common.DbConnection c, System.Data.Common.DbTransaction t, AuditEntry entry, CancellationToken cancellationToken) =>
        c.ExecuteAsync(new CommandDefinition(
            "INSERT INTO audit_log (at_ms, actor, role, action, target, detail) VALUES (@at, @actor, @role, @action, @target, @detail)",
            new { at = entry.At.ToUnixTimeMilliseconds(), actor = entry.Actor, role = entry.Role, action = entry.Action, target = entry.Target, detail = entry.Detail },
            t, cancellationToken: cancellationToken));

    /// <summary>
    /// The newest <paramref name="query"/>.Limit entries that match (older than <c>Before</c>, an entry id, when
    /// paging), returned oldest first.
    /// </summary>
    public async Task<IReadOnlyList<AuditEntry>> ReadAsync(AuditQuery query, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        var sql = new StringBuilder("SELECT id, at_ms, actor, role, action, target, detail FROM audit_log WHERE 1 = 1");
        if (query.Actor is not null)
            sql.Append(" AND actor = @Actor");
        if (query.Action is not null)
            sql.Append(" AND action = @Action");
        if (query.Target is not null)
            sql.Append(" AND (target = @Target OR target LIKE @TargetPrefix ESCAPE '\\')");
        if (query.Since is not null)
            sql.Append(" AND at_ms >= @SinceMs");
        if (query.Until is not null)
            sql.Append(" AND at_ms < @UntilMs");
        if (query.Before is not null)
            sql.Append(" AND id < @Before");
        sql.Append(" ORDER BY id DESC LIMIT @Limit");
        var rows = await db.ReadAsync(c => c.QueryAsync<(long Id, long AtMs, string Actor, string Role, string Action, string Target, string? Detail)>(new CommandDefinition(
            sql.ToString(), new
            {
                query.Actor,
                query.Action,
                query.Target,
                // "rack1" also finds "rack1/0" (a drive of that agent).
                TargetPrefix = query.Target is null ? null : query.Target.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("%", "\\%", StringComparison.Ordinal).Replace("_", "\\_", StringComparison.Ordinal) + "/%",
                SinceMs = query.Since?.ToUnixTimeMilliseconds(),
                UntilMs = query.Until?.ToUnixTimeMilliseconds(),
                query.Before,
                Limit = Math.Clamp(query.Limit, 1, MaxPage),
            }, cancellationToken: cancellationToken)), cancellationToken);
        return rows.Reverse().Select(r => new AuditEntry(DateTimeOffset.FromUnixTimeMilliseconds(r.AtMs), r.Actor, r.Role, r.Action, r.Target, r.Detail) { Id = r.Id }).ToList();
    }
}

public sealed record AuditQuery(int Limit = 200, string? Actor = null, string? Action = null, string? Target = null,
    DateTimeOffset? Since = null, DateTimeOffset? Until = null, long? Before = null);

public sealed record AuditEntry(DateTimeOffset At, string Actor, string Role, string Action, string Target, string? Detail)
{
    /// <summary>The entry's number (commit order); <c>?before=</c> this id pages to older entries.</summary>
    public long Id { get; init; }
}
