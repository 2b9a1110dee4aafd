namespace MsdFleet.Coordinator.State;

/// <summary>The state database: migrations and import at start, the leader lease, cross-replica notifications.</summary>
public static class StateSetup
{
    public static WebApplicationBuilder AddState(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<StateOptions>().BindConfiguration(StateOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<StateDatabase>();
        // After the object store's check (registered before it), before everything that reads state.
        builder.Services.AddHostedService<StateStartupService>();
        builder.Services.AddSingleton<LeaderLease>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<LeaderLease>());
        builder.Services.AddSingleton<StateNotifications>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<StateNotifications>());
        return builder;
    }
}
