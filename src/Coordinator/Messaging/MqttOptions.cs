using System.ComponentModel.DataAnnotations;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Messaging;

/// <summary>Bound from <c>Mqtt</c>: the embedded broker (default) or an external one by URL.</summary>
public sealed class MqttOptions : IValidatableObject
{
    public const string Section = "Mqtt";

    /// <summary><c>embedded</c>, or <c>mqtt://host:port</c> of an external broker.</summary>
    [Required]
    public string Broker { get; set; } = "embedded";

    /// <summary>Port of the embedded broker's listener.</summary>
    [Range(1, 65535)]
    public int EmbeddedPort { get; set; } = 1883;

    /// <summary>Address the embedded broker binds; loopback unless agents run on other hosts.</summary>
    [Required]
    public string EmbeddedBindAddress { get; set; } = "127.0.0.1";

    /// <summary>Where the embedded broker keeps retained messages across restarts.</summary>
    [Required]
    public string EmbeddedStatePath { get; set; } = "data/broker";

    public string TopicPrefix { get; set; } = TopicNames.DefaultPrefix;

    /// <summary>Credentials for an external broker.</summary>
    public string? Username { get; set; }
    public string? Password { get; set; }

    public bool IsEmbedded => string.Equals(Broker, "embedded", StringComparison.OrdinalIgnoreCase);

    public Uri BrokerUri => IsEmbedded ? new Uri($"mqtt://127.0.0.1:{EmbeddedPort}") : new Uri(Broker);

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (!IsEmbedded && (!Uri.TryCreate(Broker, UriKind.Absolute, out var uri) || uri.Scheme != "mqtt" || uri.Port <= 0))
            yield return new ValidationResult($"Mqtt:Broker must be 'embedded' or mqtt://host:port, not '{Broker}'.", [nameof(Broker)]);
        if (!System.Net.IPAddress.TryParse(EmbeddedBindAddress, out _))
            yield return new ValidationResult($"Mqtt:EmbeddedBindAddress '{EmbeddedBindAddress}' is not an IP address.", [nameof(EmbeddedBindAddress)]);
        string? error = null;
        try
        {
            _ = new TopicNames(TopicPrefix);
        }
        catch (ArgumentException ex)
        {
            error = ex.Message;
        }
        if (error is not null)
            yield return new ValidationResult($"Mqtt:TopicPrefix is invalid: {error}", [nameof(TopicPrefix)]);
    }
}
