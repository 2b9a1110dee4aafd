using MsdFleet.Coordinator.Auth;
using MsdFleet.Coordinator.Catalog;
using MsdFleet.Coordinator.Fleet;
using MsdFleet.Coordinator.Integrations;
using MsdFleet.Coordinator.Messaging;
using MsdFleet.Coordinator.Rollouts;
using MsdFleet.Coordinator.Security;
using MsdFleet.Coordinator.State;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;

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
        // Each feature registers itself from its own folder. The order is the start order of their background
        // work: the store is checked first, then state is migrated and loaded, then the broker, then the rest.
        builder.AddObjectStore();
        builder.AddState();
        builder.AddTls();
        builder.AddMessaging();
        builder.AddAuth();
        builder.AddCatalog();
        builder.AddFleet();
        builder.AddLiveEvents();
        builder.AddRollouts();
        builder.AddHomeAssistant();
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
        app.UseAuthorization();
        app.MapHealthChecks();
        Observability.MetricsSetup.MapMetrics(app);
        app.MapCatalogApi();
        app.MapPushApi();
        app.MapFleetApi();
        app.MapRolloutApi();
        app.MapTokenApi();
        app.MapEnrollmentApi();
        app.MapSessionApi();
        app.MapEventApi();
        HomeAssistantCredentials.MapHomeAssistantApi(app);
        app.MapOpenApi("/openapi/{documentName}.json").RequireAuthorization(Policies.Read);
        app.MapMosquittoConfig();
        return app;
    }
}
