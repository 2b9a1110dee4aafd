using MsdFleet.Coordinator.Messaging;
using MsdFleet.Coordinator.Storage;

namespace MsdFleet.Coordinator.Web;

/// <summary><c>/healthz</c> (the process is alive) and <c>/readyz</c> (it can serve: its dependencies answer).</summary>
public static class HealthEndpoints
{
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

    public static WebApplication MapHealthChecks(this WebApplication app)
    {
        app.MapGet("/healthz", () => Results.Ok(new { status = "ok" })).AllowAnonymous();
        // Ready only when every dependency answers now: the state database, the object store and the broker.
        // (State is loaded before the server listens: StateStartupService runs first.)
        app.MapGet("/readyz", async (CoordinatorMqttService mqtt, State.StateDatabase db, IObjectStore store, HttpContext http) =>
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
            timeout.CancelAfter(TimeSpan.FromSeconds(3));
            var database = await ProbeAsync(() => db.ReadAsync(c => Dapper.SqlMapper.ExecuteScalarAsync<int>(c, new Dapper.CommandDefinition("SELECT 1", cancellationToken: timeout.Token)), timeout.Token));
            var objects = await ProbeAsync(() => store.GetSizeAsync(ObjectKeys.ReadinessProbe, timeout.Token));
            var broker = mqtt.IsConnected ? "ok" : "disconnected";
            var ready = database == "ok" && objects == "ok" && broker == "ok";
            if (!ready)
                http.Response.Headers.RetryAfter = "5";
            return Results.Json(new { status = ready ? "ready" : "not-ready", database, store = objects, broker }, statusCode: ready ? 200 : 503);
        }).AllowAnonymous();
        return app;
    }
}
