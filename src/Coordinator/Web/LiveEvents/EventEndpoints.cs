using System.Net.ServerSentEvents;
using System.Runtime.CompilerServices;
using MsdFleet.Coordinator.Auth;

namespace MsdFleet.Coordinator.Web;

/// <summary>
/// <c>GET /api/v1/events</c>: Server-Sent Events. Each event has an <c>id</c> (its sequence number, the same
/// on every replica), a type (<c>agent</c>, <c>image</c>, <c>progress</c>, <c>reset</c>) and a JSON body. The stream starts with
/// <c>hello {sequence}</c>; a client that reconnects sends <c>Last-Event-ID</c> (browsers do it by
/// themselves) or <c>?since=N</c> and receives what it missed, or <c>reset</c> when that is gone, in
/// which case it reloads its state. <c>ping</c> every 15 s keeps proxies from closing the stream.
/// </summary>
public static class EventEndpoints
{
    public static WebApplication MapEventApi(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        app.MapGet("/api/v1/events", (HttpContext context, long? since, EventHub hub, IHostApplicationLifetime lifetime) =>
        {
            long? lastSeen = since;
            if (long.TryParse(context.Request.Headers["Last-Event-ID"].ToString(), out var header))
                lastSeen = header;
            if (lastSeen is < 0)
                throw ApiException.BadRequest("invalid-since", "since / Last-Event-ID must be a sequence number ≥ 0.");
            context.Response.Headers.CacheControl = "no-store";
            context.Response.Headers["X-Accel-Buffering"] = "no";
            // Streams end when the Coordinator stops, so a restart does not wait for every open page.
            return TypedResults.ServerSentEvents(StreamAsync(hub, lastSeen, context.RequestAborted, lifetime.ApplicationStopping));
        }).RequireAuthorization(Policies.Read);
        return app;
    }

    private static async IAsyncEnumerable<SseItem<string>> StreamAsync(EventHub hub, long? lastSeen, [EnumeratorCancellation] CancellationToken aborted,
        CancellationToken stopping)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(aborted, stopping);
        var ct = linked.Token;
        using var subscription = await hub.SubscribeAsync(lastSeen, ct);
        yield return new SseItem<string>($$"""{"sequence":{{subscription.Sequence}},"reset":{{(subscription.Reset ? "true" : "false")}}}""", "hello")
        {
            ReconnectionInterval = TimeSpan.FromSeconds(2),
        };
        if (subscription.Reset)
            yield return new SseItem<string>($$"""{"sequence":{{subscription.Sequence}}}""", "reset") { EventId = subscription.Sequence.ToString(System.Globalization.CultureInfo.InvariantCulture) };
        foreach (var e in subscription.Backlog)
            yield return Item(e);
        while (!ct.IsCancellationRequested)
        {
            EventHub.HubEvent? next = null;
            using (var heartbeat = CancellationTokenSource.CreateLinkedTokenSource(ct))
            {
                heartbeat.CancelAfter(TimeSpan.FromSeconds(15));
                try
                {
                    if (!await subscription.Reader.WaitToReadAsync(heartbeat.Token))
                        yield break; // cut off for being too slow: the client reconnects with Last-Event-ID
                    subscription.Reader.TryRead(out next);
                }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                }
                catch (OperationCanceledException)
                {
                    yield break;
                }
            }
            yield return next is null ? new SseItem<string>("{}", "ping") : Item(next);
        }
    }

    private static SseItem<string> Item(EventHub.HubEvent e) =>
        new(e.Json, e.Type) { EventId = e.Sequence.ToString(System.Globalization.CultureInfo.InvariantCulture) };
}
