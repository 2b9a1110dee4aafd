using OpenTelemetry.Metrics;

namespace MsdFleet.Coordinator.Observability;

/// <summary>Bound from <c>Metrics</c>.</summary>
public sealed class MetricsOptions
{
    public const string Section = "Metrics";

    /// <summary>
    /// The management port that serves <c>GET /metrics</c> (Prometheus text format) and nothing public;
    /// 0 (the default) serves no metrics. Kubernetes manifests use 9464 and a NetworkPolicy that admits only
    /// the scraper.
    /// </summary>
    public int Port { get; set; }
}

/// <summary>
/// OpenTelemetry metrics — ASP.NET Core, HttpClient, runtime (GC, thread pool, …) and <see cref="CoordinatorMetrics"/> —
/// exported for Prometheus on the management port only: the API's own port has no <c>/metrics</c>.
/// </summary>
public static class MetricsSetup
{
    public static WebApplicationBuilder AddMetrics(this WebApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.AddSingleton<CoordinatorMetrics>();
        var options = builder.Configuration.GetSection(MetricsOptions.Section).Get<MetricsOptions>() ?? new MetricsOptions();
        if (options.Port is < 0 or > 65535)
            throw new Microsoft.Extensions.Options.OptionsValidationException(MetricsOptions.Section, typeof(MetricsOptions),
                [$"Metrics:Port must be 0 (off) or a TCP port (1-65535), not {options.Port}."]);
        builder.Services.Configure<MetricsOptions>(builder.Configuration.GetSection(MetricsOptions.Section));
        if (options.Port == 0)
            return builder;
        builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics
            .AddMeter(CoordinatorMetrics.MeterName)
            .AddAspNetCoreInstrumentation()
            .AddHttpClientInstrumentation()
            .AddRuntimeInstrumentation()
            .AddPrometheusExporter());
        // The management port joins the API's addresses; /metrics answers only there (RequireHost below).
        var urls = builder.Configuration["Urls"] ?? builder.Configuration["urls"] ?? "http://localhost:5000";
        builder.WebHost.UseUrls([.. urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), $"http://*:{options.Port}"]);
        return builder;
    }

    public static WebApplication MapMetrics(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var port = app.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<MetricsOptions>>().Value.Port;
        if (port == 0)
            return app;
        // Anonymous, like every Prometheus target, but only on the management port, which the deployment
        // keeps off the public Service and behind a NetworkPolicy.
        app.MapPrometheusScrapingEndpoint().RequireHost($"*:{port}").AllowAnonymous();
        return app;
    }
}
