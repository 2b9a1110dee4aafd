using System.Collections.Concurrent;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.Coordinator.Fleet;

/// <summary>
/// The Coordinator's in-memory view of what agents say about themselves, fed only by their retained
/// <c>status</c> and <c>reported</c> messages, so it is rebuilt at once after a restart.
/// </summary>
public sealed class FleetRegistry(TimeProvider time)
{
    private readonly ConcurrentDictionary<string, AgentObservation> _agents = new(StringComparer.Ordinal);

    /// <summary>Raised after an agent's status or report changed (live events, Home Assistant).</summary>
    public event Action<string>? Changed;

    public void SetStatus(string agentId, bool online)
    {
        _agents.AddOrUpdate(agentId,
            _ => new AgentObservation { AgentId = agentId, Online = online, StatusAt = time.GetUtcNow() },
            (_, a) => a with { Online = online, StatusAt = time.GetUtcNow() });
        Changed?.Invoke(agentId);
    }

    public void SetReport(string agentId, AgentReport report)
    {
        _agents.AddOrUpdate(agentId,
            _ => new AgentObservation { AgentId = agentId, Report = report, ReportAt = time.GetUtcNow() },
            (_, a) => a with { Report = report, ReportAt = time.GetUtcNow() });
        Changed?.Invoke(agentId);
    }

    public AgentObservation? Get(string agentId) => _agents.GetValueOrDefault(agentId);

    public IReadOnlyCollection<AgentObservation> All => _agents.Values.ToList();
}

public sealed record AgentObservation
{
    public required string AgentId { get; init; }
    public bool Online { get; init; }
    public DateTimeOffset? StatusAt { get; init; }
    public AgentReport? Report { get; init; }
    public DateTimeOffset? ReportAt { get; init; }
}
