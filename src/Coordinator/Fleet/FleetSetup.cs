namespace MsdFleet.Coordinator.Fleet;

/// <summary>The fleet: what agents report, what they should present, and the use cases that change it.</summary>
public static class FleetSetup
{
    public static WebApplicationBuilder AddFleet(this WebApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.AddSingleton<FleetRegistry>();
        builder.Services.AddSingleton<DesiredStateStore>();
        builder.Services.AddSingleton<AgentLabelStore>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<AgentLabelStore>()); // loads them at start, after the state database
        builder.Services.AddSingleton<FleetView>();
        builder.Services.AddSingleton<DriveAssignment>();
        return builder;
    }
}
