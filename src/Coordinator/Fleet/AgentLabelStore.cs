using System.Collections.Concurrent;
using System.Text.Json;
using Dapper;
using MsdFleet.Coordinator.State;

namespace MsdFleet.Coordinator.Fleet;

/// <summary>
/// Labels set centrally (<c>PUT /api/v1/agents/{id}/labels</c>), one JSON object per agent in the state
/// database. Selectors see them merged over what the agent reports, central winning
/// (<see cref="Protocol.Naming.Labels.Merge"/>). Every replica keeps all of them in memory — a fleet of 10,000
/// agents with a handful of labels each is a few megabytes — loaded at start, updated by its own writes and by
/// the <c>msdfleet_labels</c> notification of other replicas', and reloaded whole after the listener reconnected.
/// A write replaces the agent's set in one statement, so concurrent writes end with one of them, whole.
/// </summary>
public sealed class AgentLabelStore(StateDatabase db, TimeProvider time, StateNotifications? notifications = null) : IHostedService
{
    private static readonly IReadOnlyDictionary<string, string> None = new Dictionary<string, string>();
    private readonly ConcurrentDictionary<string, IReadOnlyDictionary<string, string>> _labels = new(StringComparer.Ordinal);

    /// <summary>Raised after an agent's central labels changed, here or on another replica.</summary>
    public event Action<string>? Changed;

    public IReadOnlyDictionary<string, string> Get(string agentId) => _labels.GetValueOrDefault(agentId, None);

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (notifications is not null)
        {
            notifications.Received += (channel, agentId) =>
            {
                if (channel == StateNotifications.LabelsChannel)
                    _ = ReloadAsync(agentId);
            };
            notifications.Resynchronize += () => _ = ReloadAllAsync();
        }
        await LoadAsync(cancellationToken);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task LoadAsync(CancellationToken cancellationToken)
    {
        var rows = await db.ReadAsync(c => c.QueryAsync<(string AgentId, string Labels)>(new CommandDefinition(
            "SELECT agent_id, labels FROM agent_labels", cancellationToken: cancellationToken)), cancellationToken);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (agentId, json) in rows)
        {
            seen.Add(agentId);
            Remember(agentId, Parse(json));
        }
        foreach (var gone in _labels.Keys.Where(k => !seen.Contains(k)).ToList())
            Remember(gone, None);
    }

    /// <summary>Replaces the agent's central labels (validated by the caller); an empty set removes them.</summary>
    public async Task SetAsync(string agentId, IReadOnlyDictionary<string, string> labels, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(labels);
        var sorted = new SortedDictionary<string, string>(labels.ToDictionary(), StringComparer.Ordinal);
        await db.WriteAsync(async (c, t) =>
        {
            if (sorted.Count == 0)
                await c.ExecuteAsync(new CommandDefinition("DELETE FROM agent_labels WHERE agent_id = @agentId", new { agentId }, t, cancellationToken: cancellationToken));
            else
                await c.ExecuteAsync(new CommandDefinition("""
                    INSERT INTO agent_labels (agent_id, labels, updated_at_ms) VALUES (@agentId, @labels, @now)
                    ON CONFLICT (agent_id) DO UPDATE SET labels = excluded.labels, updated_at_ms = excluded.updated_at_ms
                    """, new { agentId, labels = JsonSerializer.Serialize(sorted), now = time.GetUtcNow().ToUnixTimeMilliseconds() }, t,
                    cancellationToken: cancellationToken));
            if (db.IsPostgres)
                await c.ExecuteAsync(new CommandDefinition("SELECT pg_notify(@channel, @agentId)", new { channel = StateNotifications.LabelsChannel, agentId }, t,
                    cancellationToken: cancellationToken));
        }, cancellationToken);
        Remember(agentId, sorted.Count == 0 ? None : sorted);
    }

    private void Remember(string agentId, IReadOnlyDictionary<string, string> labels)
    {
        var before = Get(agentId);
        if (labels.Count == 0)
            _labels.TryRemove(agentId, out _);
        else
            _labels[agentId] = labels;
        if (before.Count != labels.Count || before.Any(kv => !labels.TryGetValue(kv.Key, out var v) || v != kv.Value))
            Changed?.Invoke(agentId);
    }

    private async Task ReloadAsync(string agentId)
    {
        try
        {
            var json = await db.ReadAsync(c => c.QuerySingleOrDefaultAsync<string>(
                "SELECT labels FROM agent_labels WHERE agent_id = @agentId", new { agentId }), CancellationToken.None);
            Remember(agentId, json is null ? None : Parse(json));
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

    private static IReadOnlyDictionary<string, string> Parse(string json) =>
        JsonSerializer.Deserialize<SortedDictionary<string, string>>(json) is { } parsed
            ? new SortedDictionary<string, string>(parsed, StringComparer.Ordinal) : None;
}
