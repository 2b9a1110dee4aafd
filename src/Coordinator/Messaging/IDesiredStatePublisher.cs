namespace MsdFleet.Coordinator.Messaging;

/// <summary>
/// Hands an agent its newest stored desired state (signed, retained). Whatever changes desired state calls
/// this after its transaction committed; the transport (today MQTT, <see cref="CoordinatorMqttService"/>)
/// guarantees the order: never an older generation after a newer one, from any replica.
/// </summary>
public interface IDesiredStatePublisher
{
    /// <summary>Publishes now if the transport is up; otherwise the durable state goes out when it reconnects.</summary>
    Task PublishDesiredAsync(string agentId, CancellationToken cancellationToken);

    /// <summary>The same for many agents at once (a rollout's batch): one transaction, the messages pipelined.</summary>
    Task PublishDesiredManyAsync(IReadOnlyCollection<string> agentIds, CancellationToken cancellationToken);
}

/// <summary>
/// Ends an agent's broker session at once, after its credentials were disabled, rotated or re-enrolled.
/// </summary>
public interface IAgentSessions
{
    Task EndAsync(string agentId);
}

/// <summary>
/// An external broker (Mosquitto, EMQX, HiveMQ) is not ours to disconnect clients on: a changed credential
/// takes effect there when the broker's password file is regenerated (<c>GET /api/v1/broker/mosquitto/passwords</c>)
/// and reloaded, and the agent reconnects. What the Coordinator itself decides — signed desired state,
/// HTTP chunk downloads with the agent's credentials — refuses a disabled agent at once either way.
/// </summary>
public sealed class ExternalBrokerSessions : IAgentSessions
{
    public Task EndAsync(string agentId) => Task.CompletedTask;
}
