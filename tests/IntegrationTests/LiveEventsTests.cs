using System.Net.Http.Headers;
using System.Net.ServerSentEvents;
using System.Text.Json.Nodes;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// <c>GET /api/v1/events</c>: numbered Server-Sent Events; a reconnecting client gets exactly what it
/// missed (Last-Event-ID), also after a restart; one whose position the Coordinator does not know is told to
/// reload (<c>reset</c>), and so is one that may have missed events while the Coordinator was away.
/// </summary>
public sealed class LiveEventsTests
{
    [Fact]
    public async Task Events_AreNumbered_ReconnectGetsTheGap_UnknownPositionGetsReset()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        await coordinator.CreateAgentSecretAsync("sse-agent");
        using var client = coordinator.NewClient(CoordinatorInstance.AdminToken);
        client.Timeout = Timeout.InfiniteTimeSpan;

        var first = await OpenAsync(client, null);
        var hello = await NextAsync(first);
        Assert.Equal("hello", hello.EventType);
        var start = JsonNode.Parse(hello.Data)!["sequence"]!.GetValue<long>();

        await coordinator.Http.PutAsync("api/v1/images/sse.img", new ByteArrayContent(new byte[5000]));
        (await coordinator.SetDriveAsync("sse-agent", 0, new { image = "sse.img", mode = "flash" })).EnsureSuccessStatusCode();
        var image = await NextAsync(first);
        var agent = await NextAsync(first);
        Assert.Equal(("image", start + 1), (image.EventType, long.Parse(image.EventId!, System.Globalization.CultureInfo.InvariantCulture)));
        Assert.Equal("sse.img", JsonNode.Parse(image.Data)!["name"]!.GetValue<string>());
        Assert.Equal(("agent", start + 2), (agent.EventType, long.Parse(agent.EventId!, System.Globalization.CultureInfo.InvariantCulture)));
        Assert.Equal(1, JsonNode.Parse(agent.Data)!["desired"]!["generation"]!.GetValue<long>());
        await first.DisposeAsync();

        // While nobody listens: two more changes. The reconnect gets exactly those, in order.
        (await coordinator.SetDriveAsync("sse-agent", 0, new { image = (string?)null })).EnsureSuccessStatusCode();
        (await coordinator.Http.DeleteAsync("api/v1/images/sse.img")).EnsureSuccessStatusCode();
        var second = await OpenAsync(client, start + 2);
        Assert.Equal("hello", (await NextAsync(second)).EventType);
        var missed1 = await NextAsync(second);
        var missed2 = await NextAsync(second);
        Assert.Equal(("agent", (start + 3).ToString(System.Globalization.CultureInfo.InvariantCulture)), (missed1.EventType, missed1.EventId));
        Assert.Equal(("image", (start + 4).ToString(System.Globalization.CultureInfo.InvariantCulture)), (missed2.EventType, missed2.EventId));
        Assert.Equal("deleted", JsonNode.Parse(missed2.Data)!["action"]!.GetValue<string>());
        await second.DisposeAsync();

        // The numbers live in the state database, so they go on after a restart; what happened while the
        // Coordinator was away was not recorded, so the next event tells a client from before to reload.
        await coordinator.RestartAsync();
        var third = await OpenAsync(client, start + 4);
        var helloAfter = await NextAsync(third);
        Assert.False(JsonNode.Parse(helloAfter.Data)!["reset"]!.GetValue<bool>());
        var reset = await NextAsync(third);
        Assert.Equal(("reset", (start + 5).ToString(System.Globalization.CultureInfo.InvariantCulture)), (reset.EventType, reset.EventId));
        (await coordinator.Http.PutAsync("api/v1/images/sse2.img", new ByteArrayContent(new byte[3000]))).EnsureSuccessStatusCode();
        var after = await NextAsync(third);
        Assert.Equal(("image", (start + 6).ToString(System.Globalization.CultureInfo.InvariantCulture)), (after.EventType, after.EventId));
        await third.DisposeAsync();

        // A position the log never reached (another installation's, say): reload.
        var fourth = await OpenAsync(client, start + 1000);
        Assert.True(JsonNode.Parse((await NextAsync(fourth)).Data)!["reset"]!.GetValue<bool>());
        Assert.Equal("reset", (await NextAsync(fourth)).EventType);
        await fourth.DisposeAsync();
    }

    internal static async Task<IAsyncEnumerator<SseItem<string>>> OpenAsync(HttpClient client, long? lastEventId)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, "api/v1/events");
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        if (lastEventId is { } id)
            request.Headers.Add("Last-Event-ID", id.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        response.EnsureSuccessStatusCode();
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var stream = await response.Content.ReadAsStreamAsync();
        return SseParser.Create(stream).EnumerateAsync().Where(e => e.EventType != "ping").GetAsyncEnumerator();
    }

    internal static async Task<SseItem<string>> NextAsync(IAsyncEnumerator<SseItem<string>> events)
    {
        var next = events.MoveNextAsync().AsTask();
        Assert.True(await next.WaitAsync(TimeSpan.FromSeconds(20)), "the event stream ended");
        return events.Current;
    }
}
