using System.Text;
using Microsoft.Extensions.Options;
using MsdFleet.Coordinator.Auth;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Messaging;

/// <summary>
/// The password file and ACL an external Mosquitto needs to enforce what the embedded broker enforces:
/// each agent may publish only its own status, reported and events, and read only its own desired state;
/// only the Coordinator writes desired state. Download both after adding or rotating agents and reload
/// Mosquitto (SIGHUP).
/// </summary>
public static class MosquittoConfigEndpoints
{
    public static WebApplication MapMosquittoConfig(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var group = app.MapGroup("/api/v1/broker/mosquitto").RequireAuthorization(Policies.Admin);
        group.MapGet("/acl", (TopicNames topics, IOptions<MqttOptions> options, IOptions<Integrations.HomeAssistantOptions> homeAssistant) =>
            Results.Text(Acl(topics, options.Value, homeAssistant.Value), "text/plain"));
        group.MapGet("/passwords", async (AgentCredentialStore agents, Integrations.HomeAssistantCredentials homeAssistant, IOptions<MqttOptions> options,
            CancellationToken ct) => Results.Text(await PasswordsAsync(agents, options.Value, ct) + await HomeAssistantPasswordAsync(homeAssistant, ct), "text/plain"));
        return app;
    }

    public static string Acl(TopicNames topics, MqttOptions options, Integrations.HomeAssistantOptions? homeAssistant = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new BrokerAcl(topics, options.Username, homeAssistant).RenderMosquitto();
    }

    private static async Task<string> HomeAssistantPasswordAsync(Integrations.HomeAssistantCredentials credentials, CancellationToken ct) =>
        await credentials.MosquittoHashAsync(ct) is { } hash ? $"{Integrations.HomeAssistantOptions.MqttUser}:{hash}\n" : string.Empty;

    public static async Task<string> PasswordsAsync(AgentCredentialStore agents, MqttOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(agents);
        ArgumentNullException.ThrowIfNull(options);
        var builder = new StringBuilder();
        if (!string.IsNullOrEmpty(options.Username) && !string.IsNullOrEmpty(options.Password))
            builder.Append(options.Username).Append(':').AppendLine(MosquittoPasswordHash.Create(options.Password));
        foreach (var id in (await agents.ListAgentIdsAsync(cancellationToken)).Order(StringComparer.Ordinal))
        {
            // Agents created before this existed have no Mosquitto hash: rotate their credentials to get one.
            if (await agents.FindAsync(id, cancellationToken) is { Disabled: false, MosquittoHash: { } hash })
                builder.Append(id).Append(':').AppendLine(hash);
        }
        return builder.ToString();
    }
}
