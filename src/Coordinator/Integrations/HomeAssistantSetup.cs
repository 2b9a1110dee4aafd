using MsdFleet.Coordinator.Messaging;

namespace MsdFleet.Coordinator.Integrations;

/// <summary>Home Assistant: MQTT discovery and commands, when switched on; its broker login either way (so it can be turned on later).</summary>
public static class HomeAssistantSetup
{
    public static WebApplicationBuilder AddHomeAssistant(this WebApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.AddOptions<HomeAssistantOptions>().BindConfiguration(HomeAssistantOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<HomeAssistantCredentials>();
        var homeAssistant = builder.Configuration.GetSection(HomeAssistantOptions.Section).Get<HomeAssistantOptions>() ?? new();
        if (homeAssistant.Enabled)
        {
            builder.Services.AddSingleton<HomeAssistantBridge>();
            builder.Services.AddSingleton<IMqttExtension>(sp => sp.GetRequiredService<HomeAssistantBridge>());
            builder.Services.AddHostedService(sp => sp.GetRequiredService<HomeAssistantBridge>());
        }
        return builder;
    }
}
