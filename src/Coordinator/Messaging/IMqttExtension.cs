using System.Buffers;

namespace MsdFleet.Coordinator.Messaging;

/// <summary>
/// Something else that rides on the Coordinator's MQTT session (Home Assistant discovery): the topics it
/// subscribes to, an optional last will, and callbacks for each (re)connect and each message.
/// </summary>
public interface IMqttExtension
{
    IEnumerable<string> TopicFilters { get; }

    /// <summary>Retained last will (topic, UTF-8 payload), e.g. a bridge availability topic; null for none.</summary>
    (string Topic, string Payload)? Will { get; }

    Task OnConnectedAsync(CancellationToken cancellationToken);

    /// <summary>Called for every message on one of <see cref="TopicFilters"/>; must not block.</summary>
    void OnMessage(string topic, ReadOnlySequence<byte> payload);
}
