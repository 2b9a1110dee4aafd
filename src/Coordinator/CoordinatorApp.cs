using Microsoft.AspNetCore.Server.Kestrel.Core;
using MsdFleet.Coordinator.Auth;
using MsdFleet.Coordinator.Catalog;
using MsdFleet.Coordinator.Fleet;
using MsdFleet.Coordinator.Messaging;
using MsdFleet.Coordinator.Security;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator;

/// <summary>Builds the Coordinator; Program.cs and the in-process integration tests both start it from here.</summary>
public static class CoordinatorApp
{
    public static WebApplication Build(string[] args)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions
        {
            Args = args,
            WebRootPath = Path.Combine(AppContext.BaseDirectory, "wwwroot"),
        });
        builder.AddObjectStore();
        builder.AddState();
        builder.AddTls();
        builder.AddMessaging();
        builder.AddAuth();
        builder.AddCatalog();
        builder.AddFleet();
        builder.AddWebErrors();
        Observability.MetricsSetup.AddMetrics(builder);

        builder.Services.AddOpenApi("v1", o => o.AddDocumentTransformer((document, _, _) =>
        {
            document.Info.Title = "MsdFleet Coordinator API";
            document.Info.Description = "Images, fleet, desired drive state, uploads, enrollment, users and live events. " +
                "Authenticate with `Authorization: Bearer <API token>` or the web UI's session cookie (unsafe requests then need `X-CSRF-Token`).";
            return Task.CompletedTask;
        }));

        var app = builder.Build();
        app.UseExceptionHandler();
        app.UseStatusCodePages();
        app.UseSecurityHeaders();
        // The web UI's shell (HTML, JS, CSS) holds no data and is public; everything it shows comes from the API.
        app.UseDefaultFiles();
        app.UseStaticFiles();
        app.UseSwaggerUI(o =>
        {
            o.RoutePrefix = "api/docs";
            o.SwaggerEndpoint("/openapi/v1.json", "MsdFleet v1");
            o.DocumentTitle = "MsdFleet API reference";
        });
        app.UseAuthentication();
        app.UseCsrfProtection();
        app.UseRateLimiter();
        app.UseAuthorization();
        app.MapHealthChecks();
        Observability.MetricsSetup.MapMetrics(app);
        app.MapCatalogApi();
        app.MapPushApi();
        app.MapFleetApi();
        app.MapTokenApi();
        app.MapEnrollmentApi();
        app.MapSessionApi();
        app.MapEventApi();
        Integrations.HomeAssistantCredentials.MapHomeAssistantApi(app);
        app.MapOpenApi("/openapi/{documentName}.json").RequireAuthorization(Policies.Read);
        app.MapMosquittoConfig();
        return app;
    }

    private static WebApplicationBuilder AddObjectStore(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<ObjectStoreOptions>().BindConfiguration(ObjectStoreOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        var options = builder.Configuration.GetSection(ObjectStoreOptions.Section).Get<ObjectStoreOptions>() ?? new ObjectStoreOptions();
        if (options.IsS3)
            builder.Services.AddSingleton<IObjectStore, S3ObjectStore>();
        else
            builder.Services.AddSingleton<IObjectStore, FileSystemObjectStore>();
        // Registered first so a wrong endpoint or secret stops the start before anything else runs.
        builder.Services.AddHostedService<ObjectStoreStartupCheck>();
        builder.Services.AddSingleton(TimeProvider.System);
        return builder;
    }

    private static WebApplicationBuilder AddState(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<State.StateOptions>().BindConfiguration(State.StateOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<State.StateDatabase>();
        // After the object store's check (registered before it), before everything that reads state.
        builder.Services.AddHostedService<State.StateStartupService>();
        builder.Services.AddSingleton<State.LeaderLease>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<State.LeaderLease>());
        builder.Services.AddSingleton<State.StateNotifications>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<State.StateNotifications>());
        return builder;
    }

    private static WebApplicationBuilder AddTls(this WebApplicationBuilder builder)
    {
        // Needed before the host is built (Kestrel's certificate), so validated here, by the same rules.
        var options = builder.Configuration.GetSection(TlsOptions.Section).Get<TlsOptions>() ?? new TlsOptions();
        var results = new List<System.ComponentModel.DataAnnotations.ValidationResult>();
        if (!System.ComponentModel.DataAnnotations.Validator.TryValidateObject(options, new(options), results, validateAllProperties: true))
            throw new Microsoft.Extensions.Options.OptionsValidationException(TlsOptions.Section, typeof(TlsOptions), results.Select(r => r.ErrorMessage ?? "invalid"));
        var certificates = TlsCertificates.Load(options, TimeProvider.System);
        builder.Services.AddSingleton(certificates);
        if (certificates.Server is { } server)
        {
            builder.WebHost.ConfigureKestrel(k => k.ConfigureHttpsDefaults(h =>
            {
                h.ServerCertificate = server;
                h.ServerCertificateChain = certificates.Chain;
                h.SslProtocols = System.Security.Authentication.SslProtocols.Tls12 | System.Security.Authentication.SslProtocols.Tls13;
            }));
        }
        return builder;
    }

    private static WebApplicationBuilder AddMessaging(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<MqttOptions>().BindConfiguration(MqttOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        var options = builder.Configuration.GetSection(MqttOptions.Section).Get<MqttOptions>() ?? new MqttOptions();
        builder.Services.AddSingleton(new TopicNames(string.IsNullOrEmpty(options.TopicPrefix) ? TopicNames.DefaultPrefix : options.TopicPrefix));
        if (options.IsEmbedded)
        {
            builder.Services.AddSingleton<EmbeddedBrokerService>();
            builder.Services.AddHostedService(sp => sp.GetRequiredService<EmbeddedBrokerService>());
        }
        builder.Services.AddSingleton<CoordinatorMqttService>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<CoordinatorMqttService>());
        return builder;
    }

    private static WebApplicationBuilder AddCatalog(this WebApplicationBuilder builder)
    {
        builder.Services.AddSingleton(new ContentChunker(ChunkerParameters.Default));
        builder.Services.AddSingleton<ChunkStore>();
        builder.Services.AddSingleton<StoreGate>();
        builder.Services.AddSingleton<UrlSigner>();
        builder.Services.AddSingleton<MediaDetector>();
        builder.Services.AddSingleton<PushSessionStore>();
        builder.Services.AddSingleton<ImageCatalog>();
        builder.Services.AddSingleton<ImageIngestor>();
        builder.Services.AddSingleton<ImportJobs>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<ImportJobs>());
        builder.Services.AddSingleton<GarbageCollector>();
        builder.Services.AddSingleton<GcScheduler>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<GcScheduler>());
        builder.Services.AddSingleton<TransferCounters>();
        builder.Services.AddHostedService<CatalogStartupService>();
        // Images are many gigabytes; the upload route streams, so no global body limit applies to it.
        builder.Services.Configure<KestrelServerOptions>(k => k.Limits.MaxRequestBodySize = 64 * 1024 * 1024);
        return builder;
    }

    private static WebApplicationBuilder AddFleet(this WebApplicationBuilder builder)
    {
        builder.Services.AddSingleton<FleetRegistry>();
        builder.Services.AddSingleton<DesiredStateStore>();
        builder.Services.AddSingleton<LiveEventLog>();
        builder.Services.AddSingleton<EventHub>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<EventHub>());
        builder.Services.AddOptions<Integrations.HomeAssistantOptions>().BindConfiguration(Integrations.HomeAssistantOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<Integrations.HomeAssistantCredentials>();
        var homeAssistant = builder.Configuration.GetSection(Integrations.HomeAssistantOptions.Section).Get<Integrations.HomeAssistantOptions>() ?? new();
        if (homeAssistant.Enabled)
        {
            builder.Services.AddSingleton<Integrations.HomeAssistantBridge>();
            builder.Services.AddSingleton<IMqttExtension>(sp => sp.GetRequiredService<Integrations.HomeAssistantBridge>());
            builder.Services.AddHostedService(sp => sp.GetRequiredService<Integrations.HomeAssistantBridge>());
        }
        builder.Services.AddHostedService<LiveEventPublisher>();
        return builder;
    }

    private static WebApplicationBuilder AddWebErrors(this WebApplicationBuilder builder)
    {
        builder.Services.AddProblemDetails();
        builder.Services.AddExceptionHandler<ApiExceptionHandler>();
        builder.Services.ConfigureHttpJsonOptions(o => o.SerializerOptions.Converters.Add(new System.Text.Json.Serialization.JsonStringEnumConverter()));
        return builder;
    }

    private static async Task<string> ProbeAsync(Func<Task> probe)
    {
        try
        {
            await probe();
            return "ok";
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            return "unavailable";
        }
    }

    private static WebApplication MapHealthChecks(this WebApplication app)
    {
        app.MapGet("/healthz", () => Results.Ok(new { status = "ok" })).AllowAnonymous();
        // Ready only when every dependency answers now: the state database, the object store and the broker.
        // (State is loaded before the server listens: StateStartupService runs first.)
        app.MapGet("/readyz", async (CoordinatorMqttService mqtt, State.StateDatabase db, IObjectStore store, HttpContext http) =>
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
            timeout.CancelAfter(TimeSpan.FromSeconds(3));
            var database = await ProbeAsync(() => db.ReadAsync(c => Dapper.SqlMapper.ExecuteScalarAsync<int>(c, new Dapper.CommandDefinition("SELECT 1", cancellationToken: timeout.Token)), timeout.Token));
            var objects = await ProbeAsync(() => store.GetSizeAsync("health/readyz", timeout.Token));
            var broker = mqtt.IsConnected ? "ok" : "disconnected";
            var ready = database == "ok" && objects == "ok" && broker == "ok";
            if (!ready)
                http.Response.Headers.RetryAfter = "5";
            return Results.Json(new { status = ready ? "ready" : "not-ready", database, store = objects, broker }, statusCode: ready ? 200 : 503);
        }).AllowAnonymous();
        return app;
    }
}
