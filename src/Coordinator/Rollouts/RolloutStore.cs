using System.Text.Json;
using Dapper;
using MsdFleet.Coordinator.State;

namespace MsdFleet.Coordinator.Rollouts;

/// <summary>
/// Rollouts and their per-agent executions in the state database. Every change of state is one conditional
/// UPDATE (<c>… WHERE state = @from</c>), so a transition happens once even when two leaders overlap for a
/// moment or a request races the engine: whoever's UPDATE matched made it.
/// </summary>
public sealed class RolloutStore(StateDatabase db, TimeProvider time)
{
    private const long CreateLockKey = 0x4D53_4446_524F_4C4C; // "MSDFROLL": creations check for conflicts one at a time
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private const string Columns = "id AS Id, name AS Name, spec AS Spec, state AS State, reason AS Reason, CAST(revert AS BIGINT) AS Revert, " +
        "created_by AS CreatedBy, created_at_ms AS CreatedAtMs, updated_at_ms AS UpdatedAtMs";

    private long Now => time.GetUtcNow().ToUnixTimeMilliseconds();

    public static RolloutSpec Spec(RolloutRow row) => JsonSerializer.Deserialize<RolloutSpec>(row.Spec, Json)!;

    /// <summary>
    /// Stores a new rollout with its executions in one transaction, unless one of its agents' drive is already
    /// the target of an unfinished execution of another active rollout (then the conflicting agent ids are returned
    /// and nothing is written).
    /// </summary>
    public Task<IReadOnlyList<string>> CreateAsync(string id, string name, RolloutSpec spec, string state, string createdBy,
        IReadOnlyList<(string AgentId, int Wave)> executions, CancellationToken ct) =>
        db.WriteAsync<IReadOnlyList<string>>(async (c, t) =>
        {
            if (db.IsPostgres)
                await c.ExecuteAsync(new CommandDefinition("SELECT pg_advisory_xact_lock(@key)", new { key = CreateLockKey }, t, cancellationToken: ct));
            var busy = await c.QueryAsync<(string Spec, string AgentId)>(new CommandDefinition("""
                SELECT r.spec, e.agent_id FROM rollouts r JOIN rollout_executions e ON e.rollout_id = r.id
                WHERE r.state IN ('scheduled', 'running', 'paused', 'cancelling') AND e.state IN ('queued', 'starting', 'pulling', 'staged')
                """, transaction: t, cancellationToken: ct));
            var wanted = executions.Select(e => e.AgentId).ToHashSet(StringComparer.Ordinal);
            // Two rollouts conflict on one agent's drive; staging holds no drive and conflicts with nothing.
            var conflicts = busy.Where(b => wanted.Contains(b.AgentId) && !spec.StageOnly && JsonSerializer.Deserialize<RolloutSpec>(b.Spec, Json) is { StageOnly: false } other
                    && other.Drive == spec.Drive)
                .Select(b => b.AgentId).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
            if (conflicts.Count > 0)
                return conflicts;
            var now = Now;
            await c.ExecuteAsync(new CommandDefinition("""
                INSERT INTO rollouts (id, name, spec, state, reason, revert, created_by, created_at_ms, updated_at_ms)
                VALUES (@id, @name, @spec, @state, NULL, 0, @createdBy, @now, @now)
                """, new { id, name, spec = JsonSerializer.Serialize(spec, Json), state, createdBy, now }, t, cancellationToken: ct));
            await c.ExecuteAsync(new CommandDefinition("""
                INSERT INTO rollout_executions (rollout_id, agent_id, wave, state, updated_at_ms) VALUES (@id, @agentId, @wave, 'queued', @now)
                """, executions.Select(e => new { id, agentId = e.AgentId, wave = (long)e.Wave, now }), t, cancellationToken: ct));
            return [];
        }, ct);

    public async Task<IReadOnlyList<RolloutRow>> ListAsync(CancellationToken ct) =>
        (await db.ReadAsync(c => c.QueryAsync<RolloutRow>(new CommandDefinition(
            $"SELECT {Columns} FROM rollouts ORDER BY created_at_ms DESC, id",
            cancellationToken: ct)), ct)).AsList();

    public Task<RolloutRow?> GetAsync(string id, CancellationToken ct) =>
        db.ReadAsync(c => c.QuerySingleOrDefaultAsync<RolloutRow?>(new CommandDefinition(
            $"SELECT {Columns} FROM rollouts WHERE id = @id",
            new { id }, cancellationToken: ct)), ct);

    public async Task<IReadOnlyList<RolloutRow>> ActiveAsync(CancellationToken ct) =>
        (await db.ReadAsync(c => c.QueryAsync<RolloutRow>(new CommandDefinition($"""
            SELECT {Columns} FROM rollouts
            WHERE state IN ('scheduled', 'running', 'paused', 'cancelling') ORDER BY created_at_ms, id
            """, cancellationToken: ct)), ct)).AsList();

    public async Task<IReadOnlyList<ExecutionRow>> ExecutionsAsync(string rolloutId, CancellationToken ct) =>
        (await db.ReadAsync(c => c.QueryAsync<ExecutionRow>(new CommandDefinition("""
            SELECT rollout_id AS RolloutId, agent_id AS AgentId, CAST(wave AS BIGINT) AS Wave, state AS State, error AS Error, generation AS Generation,
                previous AS Previous, started_at_ms AS StartedAtMs, updated_at_ms AS UpdatedAtMs
            FROM rollout_executions WHERE rollout_id = @rolloutId ORDER BY wave, agent_id
            """, new { rolloutId }, cancellationToken: ct)), ct)).AsList();

    /// <summary>Moves the rollout from one of <paramref name="from"/> to <paramref name="to"/>; false when it was in none of them.</summary>
    public Task<bool> SetStateAsync(string id, IReadOnlyCollection<string> from, string to, string? reason, CancellationToken ct, bool? revert = null) =>
        db.WriteAsync(async (c, t) => await c.ExecuteAsync(new CommandDefinition($"""
            UPDATE rollouts SET state = @to, reason = @reason, updated_at_ms = @now{(revert is null ? "" : ", revert = @revert")}
            WHERE id = @id AND {(db.IsPostgres ? "state = ANY(@from)" : "state IN @from")}
            """, new { id, to, reason, now = Now, from = from.ToArray(), revert = revert == true ? 1L : 0L }, t, cancellationToken: ct)) == 1, ct);

    /// <summary>One execution from <paramref name="from"/> to <paramref name="to"/>, with what the step learned; false when another got there first.</summary>
    public Task<bool> TransitionAsync(string rolloutId, string agentId, string from, string to, CancellationToken ct, string? error = null, long? generation = null,
        string? previous = null, bool started = false) =>
        db.WriteAsync(async (c, t) => await c.ExecuteAsync(new CommandDefinition($"""
            UPDATE rollout_executions SET state = @to, error = @error, updated_at_ms = @now
                {(generation is null ? "" : ", generation = @generation")}{(previous is null ? "" : ", previous = @previous")}{(started ? ", started_at_ms = @now" : "")}
            WHERE rollout_id = @rolloutId AND agent_id = @agentId AND state = @from
            """, new { rolloutId, agentId, from, to, error, generation, previous, now = Now }, t, cancellationToken: ct)) == 1, ct);

    /// <summary>Claims queued executions (<c>queued → starting</c>) in one statement; returns the agents whose claim this was.</summary>
    public Task<IReadOnlyList<string>> ClaimAsync(string rolloutId, IReadOnlyCollection<string> agentIds, CancellationToken ct) =>
        db.WriteAsync<IReadOnlyList<string>>(async (c, t) => (await c.QueryAsync<string>(new CommandDefinition($"""
            UPDATE rollout_executions SET state = 'starting', updated_at_ms = @now
            WHERE rollout_id = @rolloutId AND state = 'queued' AND {(db.IsPostgres ? "agent_id = ANY(@ids)" : "agent_id IN @ids")}
            RETURNING agent_id
            """, new { rolloutId, ids = agentIds.ToArray(), now = Now }, t, cancellationToken: ct))).ToList(), ct);

    /// <summary>Many executions moved at once (a batch's outcome), each conditional on its state as in <see cref="TransitionAsync"/>.</summary>
    public Task TransitionManyAsync(string rolloutId, IReadOnlyCollection<ExecutionChange> changes, CancellationToken ct) =>
        changes.Count == 0 ? Task.CompletedTask : db.WriteAsync(async (c, t) => await c.ExecuteAsync(new CommandDefinition("""
            UPDATE rollout_executions SET state = @To, error = @Error, updated_at_ms = @Now,
                generation = COALESCE(@Generation, generation), previous = COALESCE(@Previous, previous),
                started_at_ms = CASE WHEN @Started = 1 THEN @Now ELSE started_at_ms END
            WHERE rollout_id = @RolloutId AND agent_id = @AgentId AND state = @From
            """, changes.Select(x => new { RolloutId = rolloutId, x.AgentId, x.From, x.To, x.Error, x.Generation, x.Previous, Started = x.Started ? 1L : 0L, Now }),
            t, cancellationToken: ct)), ct);

    /// <summary>Failed and timed-out executions back to queued (retry-failed); returns how many.</summary>
    public Task<int> RequeueFailedAsync(string rolloutId, CancellationToken ct) =>
        db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition("""
            UPDATE rollout_executions SET state = 'queued', error = NULL, generation = NULL, started_at_ms = NULL, updated_at_ms = @now
            WHERE rollout_id = @rolloutId AND state IN ('failed', 'timed-out')
            """, new { rolloutId, now = Now }, t, cancellationToken: ct)), ct);

    /// <summary>Queued executions to cancelled (a cancel); returns how many.</summary>
    public Task<int> CancelQueuedAsync(string rolloutId, CancellationToken ct) =>
        db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition("""
            UPDATE rollout_executions SET state = 'cancelled', updated_at_ms = @now WHERE rollout_id = @rolloutId AND state = 'queued'
            """, new { rolloutId, now = Now }, t, cancellationToken: ct)), ct);
}

/// <summary>One execution's move in <see cref="RolloutStore.TransitionManyAsync"/>.</summary>
public sealed record ExecutionChange(string AgentId, string From, string To, string? Error = null, long? Generation = null, string? Previous = null, bool Started = false);
