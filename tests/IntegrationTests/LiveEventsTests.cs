using System.Net.Http.Headers;
using System.Net.ServerSentEvents;
using System.Text.Json.Nodes;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// <c>GET /api/v1/events</c>: numbered Server-Sent Events; a reconnecting client gets exactly what it
/// missed (Last-Event-ID), and one whose position the Coordinator no longer knows (a restart) is told to
/// reload (<c>reset</c>).
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

        // After a restart the numbers start again: a client from before must reload.
        await coordinator.RestartAsync();
        var third = await OpenAsync(client, start + 4);
        var helloAfter = await NextAsync(third);
        Assert.True(JsonNode.Parse(helloAfter.Data)!["reset"]!.GetValue<bool>());
        Assert.Equal("reset", (await NextAsync(third)).EventType);
        await third.DisposeAsync();
    }

    private static async Task<IAsyncEnumerator<SseItem<string>>> OpenAsync(HttpClient client, long? lastEventId)
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

    private static async Task<SseItem<string>> NextAsync(IAsyncEnumerator<SseItem<string>> events)
    {
        var next = events.MoveNextAsync().AsTask();
        Assert.True(await next.WaitAsync(TimeSpan.FromSeconds(20)), "the event stream ended");
        return events.Current;
    }
}
