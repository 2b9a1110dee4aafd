using System.ComponentModel.DataAnnotations;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Messaging;

/// <summary>Bound from <c>Mqtt</c>: the embedded broker (default) or an external one by URL.</summary>
public sealed class MqttOptions : IValidatableObject
{
    public const string Section = "Mqtt";

    /// <summary><c>embedded</c>, or <c>mqtt://host:port</c> / <c>mqtts://host:port</c> of an external broker.</summary>
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

    /// <summary>PEM CA bundle that an external mqtts:// broker's certificate must chain to (default: the system's roots).</summary>
    public string? CaCertificatePath { get; set; }

    /// <summary>
    /// The broker URL agents are told at enrollment (e.g. <c>mqtts://fleet.example.net:8883</c>); by default
    /// the external broker's URL, or for the embedded broker the host the agent reached the Coordinator by.
    /// </summary>
    public string? PublicUrl { get; set; }

    /// <summary>Credentials for an external broker.</summary>
    public string? Username { get; set; }
    public string? Password { get; set; }

    public bool IsEmbedded => string.Equals(Broker, "embedded", StringComparison.OrdinalIgnoreCase);

    /// <summary>Where the Coordinator's own client connects (the embedded broker through loopback).</summary>
    public Uri BrokerUriFor(bool embeddedTls) => IsEmbedded ? new Uri($"{(embeddedTls ? "mqtts" : "mqtt")}://127.0.0.1:{EmbeddedPort}") : new Uri(Broker);

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (!IsEmbedded && (!Uri.TryCreate(Broker, UriKind.Absolute, out var uri) || uri.Scheme is not ("mqtt" or "mqtts") || uri.Port <= 0))
            yield return new ValidationResult($"Mqtt:Broker must be 'embedded', mqtt://host:port or mqtts://host:port, not '{Broker}'.", [nameof(Broker)]);
        if (!string.IsNullOrEmpty(CaCertificatePath) && !File.Exists(CaCertificatePath))
            yield return new ValidationResult($"Mqtt:CaCertificatePath '{CaCertificatePath}' does not exist.", [nameof(CaCertificatePath)]);
        if (!string.IsNullOrEmpty(PublicUrl) && (!Uri.TryCreate(PublicUrl, UriKind.Absolute, out var pub) || pub.Scheme is not ("mqtt" or "mqtts") || pub.Port <= 0))
            yield return new ValidationResult($"Mqtt:PublicUrl must be mqtt://host:port or mqtts://host:port, not '{PublicUrl}'.", [nameof(PublicUrl)]);
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
