namespace MsdFleet.Coordinator.Rollouts;

/// <summary>Rollouts: their store, and the engine the leader runs.</summary>
public static class RolloutsSetup
{
    public static WebApplicationBuilder AddRollouts(this WebApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.AddSingleton<RolloutStore>();
        builder.Services.AddSingleton<RolloutEngine>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<RolloutEngine>());
        return builder;
    }
}
