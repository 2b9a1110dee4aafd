using System.Diagnostics.Metrics;
using MsdFleet.Coordinator.Fleet;
using MsdFleet.Coordinator.State;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.Coordinator.Observability;

/// <summary>
/// The Coordinator's own instruments (meter <c>MsdFleet.Coordinator</c>), exported with ASP.NET Core,
/// HttpClient and runtime instruments (see <see cref="MetricsSetup"/>). Names are dotted lowercase with
/// UCUM units; the Prometheus exporter turns <c>msdfleet.agents.online</c> into <c>msdfleet_agents_online</c>.
/// Gauges are computed when scraped, from what this replica sees (every replica sees every agent's
/// retained status and reports through the broker).
/// </summary>
public sealed class CoordinatorMetrics : IDisposable
{
    public const string MeterName = "MsdFleet.Coordinator";
    private readonly Meter _meter = new(MeterName);

    public CoordinatorMetrics(FleetRegistry registry, DesiredStateStore desired, LeaderLease leader)
    {
        ArgumentNullException.ThrowIfNull(registry);
        ArgumentNullException.ThrowIfNull(desired);
        ArgumentNullException.ThrowIfNull(leader);
        _meter.CreateObservableGauge("msdfleet.agents.online", () => registry.All.Count(a => a.Online), "{agent}",
            "Agents whose MQTT session is up.");
        _meter.CreateObservableGauge("msdfleet.agents.drifted", () => registry.All.Count(a => IsDrifted(a, desired.Get(a.AgentId))), "{agent}",
            "Online agents whose last report is of an older generation than their desired state.");
        _meter.CreateObservableGauge("msdfleet.pulls.active",
            () => registry.All.Sum(a => a.Online ? a.Report?.Transfers.Count(t => t.State is TransferState.Pulling or TransferState.Verifying) ?? 0 : 0), "{pull}",
            "Image pulls agents report in progress.");
        _meter.CreateObservableGauge("msdfleet.leader", () => leader.IsLeader ? 1 : 0, "{replica}",
            "1 on the replica that holds the leader lease (runs GC and other singleton work).");
        PublishDuration = _meter.CreateHistogram<double>("msdfleet.mqtt.publish.duration", "s",
            "Signing and publishing one desired state, until the broker acknowledged it.");
        GcDuration = _meter.CreateHistogram<double>("msdfleet.gc.duration", "s", "One garbage collection run.");
        GcFreed = _meter.CreateCounter<long>("msdfleet.gc.freed", "By", "Bytes garbage collection freed in the store.");
        BytesPresigned = _meter.CreateCounter<long>("msdfleet.content.bytes_presigned", "By",
            "Image bytes covered by the presigned object-store URLs handed to agents (layouts); agents fetch from the store, and only what they lack.");
    }

    public Histogram<double> PublishDuration { get; }
    public Histogram<double> GcDuration { get; }
    public Counter<long> GcFreed { get; }
    public Counter<long> BytesPresigned { get; }

    internal static bool IsDrifted(AgentObservation agent, DesiredState? desired) =>
        agent.Online && desired is not null && (agent.Report?.AppliedGeneration ?? 0) < desired.Generation;

    public void Dispose() => _meter.Dispose();
}
