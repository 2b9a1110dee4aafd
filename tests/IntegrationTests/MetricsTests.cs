using System.Globalization;
using System.Net;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>Prometheus scrapes the management port and finds the Coordinator's own, ASP.NET Core and runtime instruments with true values.</summary>
public sealed class MetricsTests : IAsyncLifetime
{
    private readonly string _work = TestPaths.NewTempDir("metrics");

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        Directory.Delete(_work, true);
        return Task.CompletedTask;
    }

    [Fact]
    public async Task Scrape_ManagementPort_ShowsAgentsPublishesBytesHttpAndRuntime_ApiPortHasNoMetrics()
    {
        var port = TestPaths.FreePort();
        await using var coordinator = await CoordinatorInstance.StartAsync(extraArgs: [$"--Metrics:Port={port}"]);
        var (path, _) = await TestImages.CreateAsync(_work, "m.img", 500_000, seed: 3);
        var digest = (await coordinator.UploadAsync("m.img", path))["digest"]!.GetValue<string>();
        await using var agent = new AgentProcess("metrics-01", await coordinator.CreateAgentSecretAsync("metrics-01"), coordinator);
        agent.Start();
        using (var set = await coordinator.SetDriveAsync("metrics-01", 0, new { image = "m.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);
        await coordinator.WaitForAgentAsync("metrics-01", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == digest, "attached", diagnostics: () => agent.Log);
        var whole = await coordinator.Http.GetByteArrayAsync("api/v1/images/m.img");

        using var scraper = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}/") }; // no credentials, as Prometheus
        var text = await Eventually.WaitAsync(async () =>
        {
            var body = await scraper.GetStringAsync("metrics");
            return Value(body, "msdfleet_agents_online") == 1 && Value(body, "msdfleet_agents_drifted") == 0 ? body : null;
        }, TimeSpan.FromSeconds(20), "the scrape to show one online agent that is not drifted");

        Assert.Equal(1, Value(text, "msdfleet_leader"));
        Assert.True(Value(text, "msdfleet_mqtt_publish_duration_seconds_count") >= 1, text);
        Assert.True(Value(text, "msdfleet_content_bytes_served_bytes_total") >= whole.Length, "the image download and the agent's pack fetches are counted");
        Assert.Contains("http_server_request_duration_seconds_bucket", text, StringComparison.Ordinal);
        Assert.Contains("dotnet_gc_collections", text, StringComparison.Ordinal);

        using var onApi = await coordinator.NewClient().GetAsync("metrics");
        Assert.NotEqual(HttpStatusCode.OK, onApi.StatusCode);
    }

    /// <summary>The sum of every sample of metric <paramref name="name"/> (any labels), or null when it is absent.</summary>
    private static double? Value(string exposition, string name)
    {
        double? sum = null;
        foreach (var line in exposition.Split('\n'))
        {
            if (line.StartsWith('#') || line.Split('{', ' ')[0] != name)
                continue;
            var afterLabels = line.Contains('}', StringComparison.Ordinal) ? line[(line.LastIndexOf('}') + 1)..] : line[name.Length..];
            var value = afterLabels.Trim().Split(' ')[0];
            sum = (sum ?? 0) + double.Parse(value, NumberStyles.Float, CultureInfo.InvariantCulture);
        }
        return sum;
    }
}
