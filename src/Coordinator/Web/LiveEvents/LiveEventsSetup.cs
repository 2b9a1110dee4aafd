namespace MsdFleet.Coordinator.Web;

/// <summary>Live events: the log in the state database, the leader's writer, and every replica's tailer.</summary>
public static class LiveEventsSetup
{
    public static WebApplicationBuilder AddLiveEvents(this WebApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.AddSingleton<LiveEventLog>();
        builder.Services.AddSingleton<EventHub>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<EventHub>());
        builder.Services.AddSingleton<LiveEventPublisher>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<LiveEventPublisher>());
        return builder;
    }
}
