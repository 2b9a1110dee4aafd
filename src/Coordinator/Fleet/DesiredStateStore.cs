using System.Collections.Concurrent;
using System.Data.Common;
using Dapper;
using MsdFleet.Coordinator.State;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.Coordinator.Fleet;

/// <summary>
/// Durable desired state per agent, in the state database (<c>desired_states</c>: the exact MessagePack bytes
/// that are published, with their generation; <c>desired_drives</c>: which digest each drive uses, so "is
/// this image in use" is one indexed query). The database, not the broker and not this process, is the
/// source of truth.
///
/// Concurrency: every change runs in one database transaction that first locks the agent's row (see
/// <see cref="ChangeAsync"/>), and the next generation is computed from the locked row, never from this
/// process's cache — so concurrent changes on any number of replicas get distinct, increasing generations
/// and none is lost. Publishing takes the same row lock (<see cref="PublishLatestAsync"/>) and always sends
/// the newest stored state, so a lower generation is never published after a higher one.
/// The in-memory copy (<see cref="Get"/>, <see cref="All"/>) serves reads and is only ever replaced by a
/// newer generation; other replicas' changes reach it through <see cref="StateNotifications"/> (PostgreSQL
/// NOTIFY, sent inside the changing transaction) within milliseconds.
/// </summary>
public sealed class DesiredStateStore
{
    private readonly ConcurrentDictionary<string, DesiredState> _states = new(StringComparer.Ordinal);
    private readonly StateDatabase _db;
    private readonly TimeProvider _time;

    public DesiredStateStore(StateDatabase db, TimeProvider time, StateNotifications? notifications = null)
    {
        _db = db;
        _time = time;
        if (notifications is null)
            return;
        notifications.Received += (channel, agentId) =>
        {
            if (channel == StateNotifications.DesiredChannel)
                _ = ReloadAsync(agentId);
        };
        notifications.Resynchronize += () => _ = ReloadAllAsync();
    }

    private async Task ReloadAsync(string agentId)
    {
        try
        {
            var bytes = await _db.ReadAsync(c => c.QuerySingleOrDefaultAsync<byte[]>(
                "SELECT state FROM desired_states WHERE agent_id = @agentId AND generation > 0", new { agentId }), CancellationToken.None);
            if (bytes is not null && Remember(agentId, ProtocolSerializer.Deserialize<DesiredState>(bytes)))
                Changed?.Invoke(agentId);
        }
        catch (System.Data.Common.DbException)
        {
            // The database is away; the listener resynchronizes everything when it reconnects.
        }
    }

    private async Task ReloadAllAsync()
    {
        try
        {
            await LoadAsync(CancellationToken.None);
        }
        catch (System.Data.Common.DbException)
        {
        }
    }

    public async Task LoadAsync(CancellationToken cancellationToken)
    {
        var rows = await _db.ReadAsync(c => c.QueryAsync<(string AgentId, byte[] State)>(new CommandDefinition(
            "SELECT agent_id, state FROM desired_states WHERE generation > 0", cancellationToken: cancellationToken)), cancellationToken);
        foreach (var (agentId, bytes) in rows)
        {
            if (Remember(agentId, ProtocolSerializer.Deserialize<DesiredState>(bytes)))
                Changed?.Invoke(agentId);
        }
    }

    /// <summary>Raised after an agent's desired state was stored.</summary>
    public event Action<string>? Changed;

    public DesiredState? Get(string agentId) => _states.GetValueOrDefault(agentId);

    /// <summary>The agent's stored desired state, read from the database now (for checks that must not trust a cache).</summary>
    public async Task<DesiredState?> GetFreshAsync(string agentId, CancellationToken cancellationToken)
    {
        var bytes = await _db.ReadAsync(c => c.QuerySingleOrDefaultAsync<byte[]>(new CommandDefinition(
            "SELECT state FROM desired_states WHERE agent_id = @agentId AND generation > 0", new { agentId }, cancellationToken: cancellationToken)), cancellationToken);
        if (bytes is null)
            return null;
        var state = ProtocolSerializer.Deserialize<DesiredState>(bytes);
        Remember(agentId, state);
        return state;
    }

    public IReadOnlyDictionary<string, DesiredState> All => _states;

    /// <summary>What a change produces: the drives, the agent's bandwidth override and the staged images (generation and signature are the store's).</summary>
    public sealed record DesiredContent(IReadOnlyList<DesiredDrive> Drives, long? MaxBytesPerSecond, IReadOnlyList<PrefetchImage>? Prefetch = null)
    {
        public static DesiredContent Of(DesiredState? state) => new(state?.Drives ?? [], state?.MaxBytesPerSecond, state?.Prefetch);
    }

    /// <summary>What <see cref="ChangeAsync"/> hands its caller: the locked current state and the open transaction.</summary>
    public sealed record Change(string AgentId, DesiredState? Current, DbConnection Connection, DbTransaction Transaction);

    /// <summary>
    /// Changes one agent's desired state in one transaction: the agent's row is locked (created first when
    /// the agent has none, so two first assignments serialize on it too), <paramref name="next"/> builds the
    /// new drives and bandwidth from the locked current state — it may read or lock other rows through the
    /// same transaction, or throw to change nothing — and the result is stored with generation + 1.
    /// </summary>
    public async Task<DesiredState> ChangeAsync(string agentId, Func<Change, Task<DesiredContent>> next,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(next);
        var state = await _db.WriteAsync((c, t) => ChangeInAsync(c, t, agentId, next, cancellationToken), cancellationToken);
        Remember(agentId, state);
        Changed?.Invoke(agentId);
        return state;
    }

    /// <summary>
    /// <see cref="ChangeAsync"/> for many agents in one transaction (a rollout's batch): each agent's row is locked and
    /// changed as there, in id order (so two batches over the same agents cannot deadlock). An agent whose
    /// <paramref name="next"/> throws an <see cref="Web.ApiException"/> is left unchanged and returned with the error; the
    /// others commit together.
    /// </summary>
    public async Task<IReadOnlyDictionary<string, (DesiredState? State, Web.ApiException? Error)>> ChangeManyAsync(IReadOnlyCollection<string> agentIds,
        Func<Change, Task<DesiredContent>> next, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(agentIds);
        ArgumentNullException.ThrowIfNull(next);
        var results = await _db.WriteAsync(async (c, t) =>
        {
            var results = new Dictionary<string, (DesiredState?, Web.ApiException?)>(agentIds.Count, StringComparer.Ordinal);
            foreach (var agentId in agentIds.Order(StringComparer.Ordinal))
            {
                try
                {
                    results[agentId] = (await ChangeInAsync(c, t, agentId, next, cancellationToken), null);
                }
                catch (Web.ApiException ex)
                {
                    results[agentId] = (null, ex); // refused before anything of this agent's was written (see ChangeInAsync)
                }
            }
            return results;
        }, cancellationToken);
        foreach (var (agentId, (state, _)) in results)
        {
            if (state is null)
                continue;
            Remember(agentId, state);
            Changed?.Invoke(agentId);
        }
        return results;
    }

    /// <summary>One agent's change inside the caller's transaction. <paramref name="next"/> runs before anything but the
    /// (harmless, empty) placeholder row is written, so a refusal from it leaves the agent as it was.</summary>
    private async Task<DesiredState> ChangeInAsync(DbConnection c, DbTransaction t, string agentId, Func<Change, Task<DesiredContent>> next, CancellationToken cancellationToken)
    {
        var nowMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
        await c.ExecuteAsync(new CommandDefinition(
            "INSERT INTO desired_states (agent_id, generation, state, updated_at_ms) VALUES (@agentId, 0, @empty, @nowMs) ON CONFLICT (agent_id) DO NOTHING",
            new { agentId, empty = Array.Empty<byte>(), nowMs }, t, cancellationToken: cancellationToken));
        var row = await c.QuerySingleAsync<(long Generation, byte[] State)>(new CommandDefinition(
            $"SELECT generation, state FROM desired_states WHERE agent_id = @agentId{_db.ForUpdate}", new { agentId }, t, cancellationToken: cancellationToken));
        var current = row.Generation > 0 ? ProtocolSerializer.Deserialize<DesiredState>(row.State) : null;
        var content = await next(new Change(agentId, current, c, t));
        var state = new DesiredState
        {
            Generation = row.Generation + 1,
            Drives = content.Drives.OrderBy(d => d.Index).ToList(),
            IssuedAtUnixMs = nowMs,
            MaxBytesPerSecond = content.MaxBytesPerSecond,
            AgentId = agentId,
            Prefetch = content.Prefetch is { Count: > 0 } staged ? staged.OrderBy(p => p.ImageDigest, StringComparer.Ordinal).ToList() : null,
        };
        await c.ExecuteAsync(new CommandDefinition(
            "UPDATE desired_states SET generation = @generation, state = @bytes, updated_at_ms = @nowMs WHERE agent_id = @agentId",
            new { agentId, generation = state.Generation, bytes = ProtocolSerializer.Serialize(state), nowMs }, t, cancellationToken: cancellationToken));
        await c.ExecuteAsync(new CommandDefinition("DELETE FROM desired_drives WHERE agent_id = @agentId", new { agentId }, t, cancellationToken: cancellationToken));
        // Staged images are rows too (drive -1, -2 …), so an image an agent is told to hold cannot be deleted under it.
        var uses = state.Drives.Where(d => d.ImageDigest is not null).Select(d => new { agentId, index = d.Index, digest = d.ImageDigest! })
            .Concat((state.Prefetch ?? []).Select((p, i) => new { agentId, index = -1 - i, digest = p.ImageDigest })).ToList();
        if (uses.Count > 0)
            await c.ExecuteAsync(new CommandDefinition("INSERT INTO desired_drives (agent_id, drive, digest) VALUES (@agentId, @index, @digest)",
                uses, t, cancellationToken: cancellationToken));
        if (_db.IsPostgres)
            await c.ExecuteAsync(new CommandDefinition("SELECT pg_notify(@channel, @agentId)", new { channel = StateNotifications.DesiredChannel, agentId }, t,
                cancellationToken: cancellationToken));
        return state;
    }

    /// <summary>Replaces one drive and bumps the generation.</summary>
    public Task<DesiredState> SetDriveAsync(string agentId, DesiredDrive drive, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(drive);
        return ChangeAsync(agentId, change => Task.FromResult(WithDrive(change.Current, drive)), cancellationToken);
    }

    /// <summary>Sets (or with null clears) the agent's pull bandwidth override; bumps the generation.</summary>
    public Task<DesiredState> SetBandwidthAsync(string agentId, long? bytesPerSecond, CancellationToken cancellationToken) =>
        ChangeAsync(agentId, change => Task.FromResult(DesiredContent.Of(change.Current) with { MaxBytesPerSecond = bytesPerSecond }), cancellationToken);

    /// <summary>
    /// <paramref name="current"/> with <paramref name="drive"/> in its slot, the rest unchanged — except that an image staged
    /// before is staged no more once a drive holds it (the drive pins it now; a staged entry would pin it for ever).
    /// </summary>
    public static DesiredContent WithDrive(DesiredState? current, DesiredDrive drive)
    {
        ArgumentNullException.ThrowIfNull(drive);
        var content = DesiredContent.Of(current);
        return content with
        {
            Drives = content.Drives.Where(d => d.Index != drive.Index).Append(drive).ToList(),
            Prefetch = drive.ImageDigest is null ? content.Prefetch : content.Prefetch?.Where(p => p.ImageDigest != drive.ImageDigest).ToList(),
        };
    }

    /// <summary>The agents whose stored desired state uses <paramref name="digest"/>, read inside the caller's transaction.</summary>
    public static async Task<IReadOnlyList<string>> UsersAsync(DbConnection connection, DbTransaction transaction, string digest, CancellationToken cancellationToken) =>
        (await connection.QueryAsync<string>(new CommandDefinition(
            "SELECT DISTINCT agent_id FROM desired_drives WHERE digest = @digest ORDER BY agent_id", new { digest }, transaction, cancellationToken: cancellationToken))).ToList();

    /// <summary>
    /// Publishes the agent's newest stored desired state through <paramref name="publish"/> while holding
    /// its row lock, then records it as published. Whoever publishes — this replica or another, now or on a
    /// reconnect — sends the newest generation under the lock, so the broker never gets an older one after a
    /// newer one. Without <paramref name="force"/> nothing is sent when that generation already went out.
    /// </summary>
    public async Task<DesiredState?> PublishLatestAsync(string agentId, Func<DesiredState, Task> publish, bool force, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(publish);
        var published = await _db.WriteAsync(async (c, t) =>
        {
            var row = await c.QuerySingleOrDefaultAsync<(long Generation, byte[] State, long Published)?>(new CommandDefinition(
                $"SELECT generation, state, published_generation FROM desired_states WHERE agent_id = @agentId{_db.ForUpdate}",
                new { agentId }, t, cancellationToken: cancellationToken));
            if (row is not { Generation: > 0 } r || (!force && r.Published >= r.Generation))
                return null;
            var state = ProtocolSerializer.Deserialize<DesiredState>(r.State);
            await publish(state);
            await c.ExecuteAsync(new CommandDefinition("UPDATE desired_states SET published_generation = @generation WHERE agent_id = @agentId",
                new { agentId, generation = r.Generation }, t, cancellationToken: cancellationToken));
            return state;
        }, cancellationToken);
        if (published is not null)
            Remember(agentId, published);
        return published;
    }

    /// <summary>
    /// <see cref="PublishLatestAsync"/> for many agents in one transaction: their rows locked (in id order), every newest
    /// unpublished state handed to <paramref name="publish"/> at once (so the broker pipelines them instead of one round trip
    /// each), then recorded as published. The same rule holds — sent under the row lock, so never an older generation after a
    /// newer one. Returns the states sent.
    /// </summary>
    public async Task<IReadOnlyList<DesiredState>> PublishLatestManyAsync(IReadOnlyCollection<string> agentIds, Func<IReadOnlyList<DesiredState>, Task> publish,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(agentIds);
        ArgumentNullException.ThrowIfNull(publish);
        var sent = await _db.WriteAsync<IReadOnlyList<DesiredState>>(async (c, t) =>
        {
            var states = new List<DesiredState>(agentIds.Count);
            foreach (var agentId in agentIds.Order(StringComparer.Ordinal))
            {
                var row = await c.QuerySingleOrDefaultAsync<(long Generation, byte[] State, long Published)?>(new CommandDefinition(
                    $"SELECT generation, state, published_generation FROM desired_states WHERE agent_id = @agentId{_db.ForUpdate}",
                    new { agentId }, t, cancellationToken: cancellationToken));
                if (row is { Generation: > 0 } r && r.Published < r.Generation)
                    states.Add(ProtocolSerializer.Deserialize<DesiredState>(r.State));
            }
            if (states.Count == 0)
                return states;
            await publish(states);
            await c.ExecuteAsync(new CommandDefinition("UPDATE desired_states SET published_generation = @Generation WHERE agent_id = @AgentId",
                states.Select(s => new { s.Generation, s.AgentId }), t, cancellationToken: cancellationToken));
            return states;
        }, cancellationToken);
        foreach (var state in sent)
            Remember(state.AgentId!, state);
        return sent;
    }

    /// <summary>
    /// Whether the agent's desired state uses <paramref name="digest"/>. Answered from the cache when it says
    /// yes; otherwise from the database, since another replica may have assigned it a moment ago.
    /// </summary>
    public async Task<bool> IsAssignedAsync(string agentId, string digest, CancellationToken cancellationToken) =>
        Get(agentId)?.Drives.Any(d => d.ImageDigest == digest) == true
        || await _db.ReadAsync(c => c.ExecuteScalarAsync<long>(new CommandDefinition(
            "SELECT COUNT(*) FROM desired_drives WHERE agent_id = @agentId AND digest = @digest", new { agentId, digest }, cancellationToken: cancellationToken)), cancellationToken) > 0;

    /// <summary>Every digest some stored desired state uses, from the database.</summary>
    public Task<IReadOnlyList<string>> DigestsInUseAsync(CancellationToken cancellationToken) =>
        _db.ReadAsync<IReadOnlyList<string>>(async c => (await c.QueryAsync<string>(new CommandDefinition(
            "SELECT DISTINCT digest FROM desired_drives", cancellationToken: cancellationToken))).ToList(), cancellationToken);

    /// <summary>The agents that have desired state, from the database.</summary>
    /// <summary>Agents whose newest generation was stored but never went out (a replica stopped or the broker dropped in between).</summary>
    public Task<IReadOnlyList<string>> UnpublishedAgentIdsAsync(CancellationToken cancellationToken) =>
        _db.ReadAsync<IReadOnlyList<string>>(async c => (await c.QueryAsync<string>(new CommandDefinition(
            "SELECT agent_id FROM desired_states WHERE generation > 0 AND published_generation < generation ORDER BY agent_id",
            cancellationToken: cancellationToken))).ToList(), cancellationToken);

    public Task<IReadOnlyList<string>> AgentIdsAsync(CancellationToken cancellationToken) =>
        _db.ReadAsync<IReadOnlyList<string>>(async c => (await c.QueryAsync<string>(new CommandDefinition(
            "SELECT agent_id FROM desired_states WHERE generation > 0 ORDER BY agent_id", cancellationToken: cancellationToken))).ToList(), cancellationToken);

    /// <summary>Keeps the newer of the cached and the given state; true when the given one was newer.</summary>
    private bool Remember(string agentId, DesiredState state)
    {
        var kept = _states.AddOrUpdate(agentId, state, (_, cached) => cached.Generation >= state.Generation ? cached : state);
        return ReferenceEquals(kept, state);
    }
}
