using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Messaging;

/// <summary>The broker (embedded or external), the Coordinator's MQTT session, and the transport ports the rest of the Coordinator uses.</summary>
public static class MessagingSetup
{
    public static WebApplicationBuilder AddMessaging(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<MqttOptions>().BindConfiguration(MqttOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        var options = builder.Configuration.GetSection(MqttOptions.Section).Get<MqttOptions>() ?? new MqttOptions();
        builder.Services.AddSingleton(new TopicNames(string.IsNullOrEmpty(options.TopicPrefix) ? TopicNames.DefaultPrefix : options.TopicPrefix));
        if (options.IsEmbedded)
        {
            builder.Services.AddSingleton<EmbeddedBrokerService>();
            builder.Services.AddSingleton<IAgentSessions>(sp => sp.GetRequiredService<EmbeddedBrokerService>());
            builder.Services.AddHostedService(sp => sp.GetRequiredService<EmbeddedBrokerService>());
        }
        else
        {
            builder.Services.AddSingleton<IAgentSessions, ExternalBrokerSessions>();
        }
        builder.Services.AddSingleton<CoordinatorMqttService>();
        builder.Services.AddSingleton<IDesiredStatePublisher>(sp => sp.GetRequiredService<CoordinatorMqttService>());
        builder.Services.AddHostedService(sp => sp.GetRequiredService<CoordinatorMqttService>());
        return builder;
    }
}
