using System.ComponentModel.DataAnnotations;

namespace MsdFleet.Coordinator.Integrations;

/// <summary>
/// Bound from <c>HomeAssistant</c>: MQTT discovery (JSON, beside the MessagePack protocol) so each agent
/// shows up in Home Assistant as a device. Commands from Home Assistant act with the operator role and
/// can be switched off (<see cref="Commands"/>), leaving read-only sensors.
/// </summary>
public sealed class HomeAssistantOptions
{
    public const string Section = "HomeAssistant";

    /// <summary>The MQTT user Home Assistant logs in as (credentials from POST /api/v1/integrations/home-assistant/credentials).</summary>
    public const string MqttUser = "$homeassistant";

    public bool Enabled { get; set; } = true;

    /// <summary>Accept select/switch/button commands from Home Assistant (as an operator would).</summary>
    public bool Commands { get; set; } = true;

    /// <summary>Home Assistant's discovery prefix.</summary>
    [RegularExpression("^[a-zA-Z0-9_-]{1,64}$", ErrorMessage = "HomeAssistant:DiscoveryPrefix must be 1-64 letters, digits, '_' or '-'.")]
    public string DiscoveryPrefix { get; set; } = "homeassistant";
}
