namespace MsdFleet.Coordinator.Rollouts;

/// <summary>A rollout as the API, msdctl and live events show it: its spec, its state, progress per wave and its failures.</summary>
public sealed record RolloutView(string Id, string Name, string State, string? Reason, RolloutSpec Spec, string CreatedBy, DateTimeOffset CreatedAt,
    DateTimeOffset UpdatedAt, IReadOnlyDictionary<string, int> Counts, IReadOnlyList<WaveView> Waves, IReadOnlyList<FailureView> Failures)
{
    public const int MaxFailuresShown = 100;

    public static RolloutView From(RolloutRow row, IReadOnlyList<ExecutionRow> executions)
    {
        ArgumentNullException.ThrowIfNull(row);
        ArgumentNullException.ThrowIfNull(executions);
        return new RolloutView(row.Id, row.Name, row.State, row.Reason, RolloutStore.Spec(row), row.CreatedBy,
            DateTimeOffset.FromUnixTimeMilliseconds(row.CreatedAtMs), DateTimeOffset.FromUnixTimeMilliseconds(row.UpdatedAtMs),
            Count(executions),
            executions.GroupBy(e => e.Wave).OrderBy(g => g.Key).Select(g => new WaveView((int)g.Key, g.Count(), Count(g.ToList()))).ToList(),
            executions.Where(e => ExecutionStates.IsFailure(e.State)).Take(MaxFailuresShown).Select(e => new FailureView(e.AgentId, e.State, e.Error)).ToList());
    }

    private static Dictionary<string, int> Count(IReadOnlyCollection<ExecutionRow> executions)
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var state in (string[])[ExecutionStates.Queued, ExecutionStates.Pulling, ExecutionStates.Staged, ExecutionStates.Succeeded, ExecutionStates.Failed,
            ExecutionStates.TimedOut, ExecutionStates.Skipped, ExecutionStates.Cancelled, ExecutionStates.Reverted])
            counts[state] = 0;
        foreach (var e in executions)
        {
            var state = e.State == ExecutionStates.Starting ? ExecutionStates.Pulling : e.State;
            counts[state] = counts.GetValueOrDefault(state) + 1;
        }
        return counts;
    }
}

public sealed record WaveView(int Index, int Size, IReadOnlyDictionary<string, int> Counts);

public sealed record FailureView(string AgentId, string State, string? Error);
