using System.ComponentModel.DataAnnotations;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.EdgeAgent.Mqtt;

/// <summary>Bound from <c>Mqtt</c>. The agent logs in as its own id with its own secret.</summary>
public sealed class AgentMqttOptions : IValidatableObject
{
    public const string Section = "Mqtt";

    [Required(ErrorMessage = "Mqtt:Broker is required, e.g. mqtts://coordinator:8883.")]
    public Uri? Broker { get; set; }

    public string TopicPrefix { get; set; } = TopicNames.DefaultPrefix;

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (Broker is { } uri && (!uri.IsAbsoluteUri || uri.Scheme is not ("mqtt" or "mqtts") || uri.Port <= 0))
            yield return new ValidationResult($"Mqtt:Broker must be mqtts://host:port (or mqtt://host:port on a trusted network), not '{uri}'.", [nameof(Broker)]);
    }
}
