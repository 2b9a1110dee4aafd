using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Fleet;

/// <summary>
/// One agent as the API, the web UI, live events and Home Assistant show it: what it reports, what it should
/// present, and its labels (reported, overridden by central ones).
/// </summary>
public sealed class FleetView(FleetRegistry registry, DesiredStateStore desired, AgentLabelStore labels, Auth.AgentCredentialStore credentials)
{
    /// <summary>Every agent the Coordinator knows: those with credentials, and those only heard of over MQTT; by id.</summary>
    public async Task<IReadOnlyList<string>> KnownAgentIdsAsync(CancellationToken ct) =>
        (await credentials.ListAgentIdsAsync(ct)).Concat(registry.All.Select(a => a.AgentId)).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();

    /// <summary>The states the fleet list filters on and the summary counts.</summary>
    public static readonly IReadOnlyList<string> States = ["online", "offline", "drifted", "failing", "pulling"];

    /// <summary>
    /// Is the agent in <paramref name="state"/>? <c>drifted</c>: online, and its last report is of an older
    /// generation than its desired state (it has not caught up); <c>failing</c>: it reports an error — its own,
    /// a drive's or a failed pull; <c>pulling</c>: a pull in progress.
    /// </summary>
    public bool Is(string agentId, string state)
    {
        var observed = registry.Get(agentId);
        var report = observed?.Report;
        return state switch
        {
            "online" => observed?.Online == true,
            "offline" => observed?.Online != true,
            "drifted" => observed is not null && Observability.CoordinatorMetrics.IsDrifted(observed, desired.Get(agentId)),
            "failing" => report is not null && (report.LastError is not null || report.Drives.Any(d => d.Error is not null)
                || report.Transfers.Any(t => t.State == TransferState.Failed)),
            "pulling" => observed?.Online == true && report is not null && report.Transfers.Any(t => t.State is TransferState.Pulling or TransferState.Verifying or TransferState.Waiting),
            _ => throw new ArgumentOutOfRangeException(nameof(state), state, "not a fleet state"),
        };
    }

    /// <summary>Free-text search: the id, or any label key or value, contains <paramref name="text"/> (case-insensitive).</summary>
    public bool Contains(string agentId, string text) =>
        agentId.Contains(text, StringComparison.OrdinalIgnoreCase)
        || LabelsOf(agentId).Any(l => l.Key.Contains(text, StringComparison.OrdinalIgnoreCase) || l.Value.Contains(text, StringComparison.OrdinalIgnoreCase));

    /// <summary>Counts by state, overall and per site (agents without a site under <c>""</c>).</summary>
    public FleetSummary Summarize(IEnumerable<string> agentIds)
    {
        var total = new Dictionary<string, long>(StringComparer.Ordinal);
        var bySite = new SortedDictionary<string, Dictionary<string, long>>(StringComparer.Ordinal);
        foreach (var id in agentIds)
        {
            var site = LabelsOf(id).GetValueOrDefault(Labels.Site) ?? "";
            if (!bySite.TryGetValue(site, out var counts))
                bySite[site] = counts = new Dictionary<string, long>(StringComparer.Ordinal);
            foreach (var bucket in (Dictionary<string, long>[])[total, counts])
            {
                bucket["total"] = bucket.GetValueOrDefault("total") + 1;
                foreach (var state in States)
                    bucket[state] = bucket.GetValueOrDefault(state) + (Is(id, state) ? 1 : 0);
            }
        }
        foreach (var bucket in bySite.Values.Append(total))
        {
            bucket.TryAdd("total", 0);
            foreach (var state in States)
                bucket.TryAdd(state, 0);
        }
        return new FleetSummary(total, bySite);
    }

    /// <summary>The labels selectors match against.</summary>
    public IReadOnlyDictionary<string, string> LabelsOf(string agentId) => Labels.Merge(registry.Get(agentId)?.Report?.Labels, labels.Get(agentId));

    public AgentView View(string agentId)
    {
        var observed = registry.Get(agentId);
        var state = desired.Get(agentId);
        var report = observed?.Report;
        var merged = LabelsOf(agentId);
        return new AgentView(
            agentId,
            observed?.Online ?? false,
            observed?.StatusAt,
            observed?.ReportAt,
            report?.AgentVersion,
            merged,
            report?.Drives.Select(DriveView.From).ToList(),
            report?.Cache.Select(c => new CachedImageView(c.ImageDigest, c.Size)).ToList(),
            report?.Transfers.Select(t => new TransferView(t.ImageDigest, t.BytesDone, t.BytesTotal, t.State.ToString().ToLowerInvariant(), t.Error,
                t.ResumesAtUnixMs is { } resumes ? DateTimeOffset.FromUnixTimeMilliseconds(resumes) : null)).ToList(),
            report?.FreeBytes,
            report?.TotalBytes,
            report?.AppliedGeneration,
            report?.LastError,
            state is null ? null : DesiredView.From(state),
            merged.GetValueOrDefault(Labels.Site),
            report?.Labels,
            labels.Get(agentId));
    }
}

/// <param name="Counts"><c>total</c> and one count per <see cref="FleetView.States"/> entry.</param>
/// <param name="Sites">The same counts per <c>site</c> label.</param>
public sealed record FleetSummary(IReadOnlyDictionary<string, long> Counts, IReadOnlyDictionary<string, Dictionary<string, long>> Sites);
