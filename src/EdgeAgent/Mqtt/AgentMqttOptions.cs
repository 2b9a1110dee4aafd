using System.ComponentModel.DataAnnotations;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.EdgeAgent.Mqtt;

/// <summary>Bound from <c>Mqtt</c>. The agent logs in as its own id with its own secret.</summary>
public sealed class AgentMqttOptions : IValidatableObject
{
    public const string Section = "Mqtt";

    [Required(ErrorMessage = "Mqtt:Broker is required, e.g. mqtt://coordinator:1883.")]
    public Uri? Broker { get; set; }

    public string TopicPrefix { get; set; } = TopicNames.DefaultPrefix;

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (Broker is { } uri && (!uri.IsAbsoluteUri || uri.Scheme != "mqtt" || uri.Port <= 0))
            yield return new ValidationResult($"Mqtt:Broker must be mqtt://host:port, not '{uri}'.", [nameof(Broker)]);
    }
}
