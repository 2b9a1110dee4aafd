using Microsoft.Extensions.Options;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Naming;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.EdgeAgent.Mqtt;

/// <summary>
/// What the reconcile side needs from the transport: publish the retained report and non-retained
/// events, and learn about (re)connects. Kept apart from the MQTT client so the runner and reporter can
/// be tested with a fake, and so they never see topics or payload encoding.
/// </summary>
public interface IAgentPublisher
{
    bool IsConnected { get; }

    /// <summary>Raised after each successful (re)connect, so the reporter republishes at once.</summary>
    event Action? Connected;

    Task PublishReportAsync(AgentReport report, CancellationToken cancellationToken);

    Task PublishEventAsync(AgentEvent agentEvent, CancellationToken cancellationToken);
}

/// <summary>Publishes over the agent's MQTT session: the report retained, events with MQTT v5 expiry.</summary>
public sealed class MqttAgentPublisher(AgentMqttService mqtt, TopicNames topics, IOptions<AgentOptions> options, TimeProvider time) : IAgentPublisher
{
    /// <summary>MQTT v5 message expiry of events: a progress line older than this is history, not news.</summary>
    public static readonly TimeSpan EventLifetime = TimeSpan.FromMinutes(2);

    public bool IsConnected => mqtt.IsConnected;

    public event Action? Connected
    {
        add => mqtt.Connected += value;
        remove => mqtt.Connected -= value;
    }

    public Task PublishReportAsync(AgentReport report, CancellationToken cancellationToken) =>
        mqtt.PublishAsync(topics.Reported(options.Value.Id), ProtocolSerializer.Serialize(report), true, cancellationToken);

    public Task PublishEventAsync(AgentEvent agentEvent, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(agentEvent);
        return mqtt.PublishAsync(topics.Events(options.Value.Id),
            ProtocolSerializer.Serialize(agentEvent with { AtUnixMs = time.GetUtcNow().ToUnixTimeMilliseconds() }), false, cancellationToken, EventLifetime);
    }
}
