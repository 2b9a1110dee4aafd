using MsdFleet.Coordinator.Catalog;
using MsdFleet.Coordinator.Fleet;
using MsdFleet.Coordinator.Messaging;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.Coordinator.Web;

/// <summary>
/// Turns what changes inside the Coordinator into <see cref="EventHub"/> events: <c>agent</c> (the
/// agent's whole view after its status, report or desired state changed), <c>image</c> (a name committed
/// or deleted) and <c>progress</c> (an agent's pull progress and attach/detach/failure events).
/// </summary>
public sealed class LiveEventPublisher(EventHub hub, FleetRegistry registry, DesiredStateStore desired, ImageCatalog catalog,
    CoordinatorMqttService mqtt) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        registry.Changed += OnAgentChanged;
        desired.Changed += OnAgentChanged;
        catalog.Changed += OnImageChanged;
        mqtt.AgentEventReceived += OnAgentEvent;
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        registry.Changed -= OnAgentChanged;
        desired.Changed -= OnAgentChanged;
        catalog.Changed -= OnImageChanged;
        mqtt.AgentEventReceived -= OnAgentEvent;
        return Task.CompletedTask;
    }

    private void OnAgentChanged(string agentId) => hub.Publish("agent", FleetEndpoints.View(agentId, registry, desired));

    private void OnImageChanged(string name, string action) => hub.Publish("image", new { name, action });

    private void OnAgentEvent(string agentId, AgentEvent e) => hub.Publish("progress", new
    {
        agentId,
        kind = e.Kind.ToString(),
        image = e.ImageDigest,
        bytesDone = e.BytesDone,
        bytesTotal = e.BytesTotal,
        message = e.Message,
        at = DateTimeOffset.FromUnixTimeMilliseconds(e.AtUnixMs),
    });
}
