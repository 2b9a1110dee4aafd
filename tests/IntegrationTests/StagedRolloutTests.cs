using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// Rollout options that travel inside the signed desired state and are kept by real agents: staging (stageOnly) then a
/// connect that moves no byte, and download windows — a pull running when its window closes stops moving bytes and
/// finishes in the next window, resumed, at its share of the site's budget.
/// </summary>
public sealed class StagedRolloutTests : IDisposable
{
    private readonly string _work = TestPaths.NewTempDir("staged");

    public void Dispose() => Directory.Delete(_work, true);

    private static async Task<JsonObject> CreateAsync(CoordinatorInstance c, object body)
    {
        using var create = await c.Http.PostAsJsonAsync("api/v1/rollouts", body);
        var text = await create.Content.ReadAsStringAsync();
        Assert.True(create.StatusCode == HttpStatusCode.Created, text);
        return JsonNode.Parse(text)!.AsObject();
    }

    private static Task<JsonObject> WaitForStateAsync(CoordinatorInstance c, string id, TimeSpan timeout, Func<string> diagnostics, params string[] states) =>
        Eventually.WaitAsync(async () =>
        {
            var view = (await c.Http.GetFromJsonAsync<JsonObject>($"api/v1/rollouts/{id}"))!;
            return states.Contains(view["state"]!.GetValue<string>()) ? view : null;
        }, timeout, $"rollout {id} to be {string.Join(" or ", states)}", () => c.Http.GetStringAsync($"api/v1/rollouts/{id}").GetAwaiter().GetResult() + "\n" + diagnostics());

    [Fact]
    public async Task StageOnly_HoldsTheImageUnattached_ThenAConnectRolloutSendsNoImageBytes()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        await using var a = new AgentProcess("stage-a", await coordinator.CreateAgentSecretAsync("stage-a"), coordinator);
        await using var b = new AgentProcess("stage-b", await coordinator.CreateAgentSecretAsync("stage-b"), coordinator);
        foreach (var id in (string[])["stage-a", "stage-b"])
            (await coordinator.Http.PutAsJsonAsync($"api/v1/agents/{id}/labels", new { labels = new Dictionary<string, string> { ["site"] = "lab" } })).EnsureSuccessStatusCode();
        a.Start();
        b.Start();
        var (path, _) = await TestImages.CreateAsync(_work, "next.img", 6L * 1024 * 1024, seed: 11);
        var digest = (await coordinator.UploadAsync("next.img", path))["digest"]!.GetValue<string>();
        string Logs() => a.Log + "\n" + b.Log;
        foreach (var id in (string[])["stage-a", "stage-b"])
            await coordinator.WaitForAgentAsync(id, x => x["online"]!.GetValue<bool>(), "online", diagnostics: Logs);

        var staged = await CreateAsync(coordinator, new { name = "stage tonight", image = "next.img", stageOnly = true, selector = "site=lab" });
        var stagedDone = await WaitForStateAsync(coordinator, staged["id"]!.GetValue<string>(), TimeSpan.FromSeconds(60), Logs, "succeeded");
        Assert.Equal(2, stagedDone["counts"]!["succeeded"]!.GetValue<int>());
        foreach (var id in (string[])["stage-a", "stage-b"])
        {
            var agent = (await coordinator.GetAgentAsync(id))!;
            Assert.Contains(agent["cache"]!.AsArray(), c => c!["digest"]!.GetValue<string>() == digest);
            Assert.Null(CoordinatorInstance.Drive(agent, 0)?["image"]); // nothing attached
            Assert.Equal(digest, agent["desired"]!["staged"]![0]!["digest"]!.GetValue<string>());
        }
        Assert.Equal("", a.Lun("file"));
        // A staged image is in use: deleting it is refused and says how to unstage.
        using (var delete = await coordinator.Http.DeleteAsync("api/v1/images/next.img"))
        {
            Assert.Equal(HttpStatusCode.Conflict, delete.StatusCode);
            Assert.Contains("staged", await delete.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        var served = coordinator.Counters.ContentBytesServed;
        var connect = await CreateAsync(coordinator, new { name = "connect", image = "next.img", mode = "cdrom", selector = "site=lab" });
        var connected = await WaitForStateAsync(coordinator, connect["id"]!.GetValue<string>(), TimeSpan.FromSeconds(60), Logs, "succeeded");
        Assert.Equal(2, connected["counts"]!["succeeded"]!.GetValue<int>());
        Assert.Equal(0, coordinator.Counters.ContentBytesServed - served);
        foreach (var id in (string[])["stage-a", "stage-b"])
        {
            var agent = (await coordinator.GetAgentAsync(id))!;
            Assert.Equal(digest, CoordinatorInstance.Drive(agent, 0)!["image"]!.GetValue<string>());
            Assert.Null(agent["desired"]!["staged"]); // on a drive now: no longer held as staged
        }
        Assert.EndsWith(".img", a.Lun("file"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task DownloadWindow_ClosingMidPull_StopsTheBytes_TheNextWindowResumesIt()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        await using var agent = new AgentProcess("window-a", await coordinator.CreateAgentSecretAsync("window-a"), coordinator);
        (await coordinator.Http.PutAsJsonAsync("api/v1/agents/window-a/labels", new { labels = new Dictionary<string, string> { ["site"] = "far" } })).EnsureSuccessStatusCode();
        agent.Start();
        const long size = 24L * 1024 * 1024;
        var (path, _) = await TestImages.CreateAsync(_work, "big.img", size, seed: 12);
        var digest = (await coordinator.UploadAsync("big.img", path))["digest"]!.GetValue<string>();
        await coordinator.WaitForAgentAsync("window-a", x => x["online"]!.GetValue<bool>(), "online", diagnostics: () => agent.Log);

        // Open now for 5 s, closed for 7 s, open again: at the site's 2 MiB/s the 24 MiB pull cannot finish in the first window.
        var now = DateTimeOffset.UtcNow;
        now = now.AddTicks(-(now.Ticks % TimeSpan.TicksPerSecond)); // windows are given to the second
        static string T(DateTimeOffset t) => t.ToString("HH:mm:ss", CultureInfo.InvariantCulture);
        var firstCloses = now.AddSeconds(5);
        var secondOpens = now.AddSeconds(12);
        var served = coordinator.Counters.ContentBytesServed;
        var rollout = await CreateAsync(coordinator, new
        {
            name = "night", image = "big.img", mode = "flash", selector = "site=far", siteMaxBytesPerSecond = 2 * 1024 * 1024,
            downloadWindows = new[] { new { start = T(now.AddSeconds(-2)), end = T(firstCloses) }, new { start = T(secondOpens), end = T(now.AddMinutes(5)) } },
        });
        var id = rollout["id"]!.GetValue<string>();
        Assert.Equal(2 * 1024 * 1024, rollout["spec"]!["siteMaxBytesPerSecond"]!.GetValue<long>());

        var waiting = await coordinator.WaitForAgentAsync("window-a", x => x["transfers"]?.AsArray().Any(t => t!["state"]!.GetValue<string>() == "waiting") == true,
            "the pull to wait for its next window", TimeSpan.FromSeconds(30), () => agent.Log);
        var transfer = waiting["transfers"]!.AsArray().First(t => t!["digest"]!.GetValue<string>() == digest)!;
        Assert.Equal(T(secondOpens), DateTimeOffset.Parse(transfer["resumesAt"]!.GetValue<string>(), CultureInfo.InvariantCulture).ToString("HH:mm:ss", CultureInfo.InvariantCulture));
        Assert.True(transfer["bytesDone"]!.GetValue<long>() is > 0 and < size, CoordinatorInstance.Dump(waiting));
        Assert.Equal(1, (await coordinator.Http.GetFromJsonAsync<JsonObject>($"api/v1/rollouts/{id}"))!["counts"]!["pulling"]!.GetValue<int>()); // waiting is still pulling

        // Let what was in flight at the close land, then no byte may move until the next window opens.
        var settle = DateTimeOffset.UtcNow.AddSeconds(1.5);
        await Eventually.WaitAsync(() => DateTimeOffset.UtcNow >= settle, TimeSpan.FromSeconds(5), "the close to settle");
        var closedServed = coordinator.Counters.ContentBytesServed;
        Assert.True(closedServed - served < size, "the whole image moved inside the first window");
        await Eventually.WaitAsync(() =>
        {
            Assert.True(closedServed == coordinator.Counters.ContentBytesServed, $"{coordinator.Counters.ContentBytesServed - closedServed} bytes moved while closed\n{agent.Log}");
            return DateTimeOffset.UtcNow >= secondOpens.AddSeconds(-0.5);
        }, TimeSpan.FromSeconds(15), "the closed window to pass without a byte moving", () => agent.Log);

        var done = await WaitForStateAsync(coordinator, id, TimeSpan.FromSeconds(60), () => agent.Log, "succeeded");
        Assert.Equal(1, done["counts"]!["succeeded"]!.GetValue<int>());
        // Resumed, not restarted: the second window moved only what the first had not written (bytes that were in the sockets'
        // buffers at the close were lost with the connections, so the first window served more than it wrote).
        var written = transfer["bytesDone"]!.GetValue<long>();
        var second = coordinator.Counters.ContentBytesServed - closedServed;
        Assert.True(second <= size - written + 1024 * 1024, $"the second window served {second} bytes; {written} of {size} were written in the first");
        Assert.Contains("paused: its download window closed", agent.Log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task SiteBudget_IsSharedByTheSitesConcurrentPulls()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        await using var a = new AgentProcess("budget-a", await coordinator.CreateAgentSecretAsync("budget-a"), coordinator);
        await using var b = new AgentProcess("budget-b", await coordinator.CreateAgentSecretAsync("budget-b"), coordinator);
        foreach (var id in (string[])["budget-a", "budget-b"])
            (await coordinator.Http.PutAsJsonAsync($"api/v1/agents/{id}/labels", new { labels = new Dictionary<string, string> { ["site"] = "thin" } })).EnsureSuccessStatusCode();
        a.Start();
        b.Start();
        const long size = 6L * 1024 * 1024;
        var (path, _) = await TestImages.CreateAsync(_work, "shared.img", size, seed: 13);
        await coordinator.UploadAsync("shared.img", path);
        string Logs() => a.Log + "\n" + b.Log;
        foreach (var id in (string[])["budget-a", "budget-b"])
            await coordinator.WaitForAgentAsync(id, x => x["online"]!.GetValue<bool>(), "online", diagnostics: Logs);

        // 2 MiB/s for the site, two pulls at a time: 1 MiB/s each, so 6 MiB each cannot take much under 6 s (3 s if each had the whole budget).
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var rollout = await CreateAsync(coordinator, new
        {
            name = "thin", image = "shared.img", mode = "cdrom", selector = "site=thin", siteMaxBytesPerSecond = 2 * 1024 * 1024, maxConcurrentPullsPerSite = 2,
        });
        var done = await WaitForStateAsync(coordinator, rollout["id"]!.GetValue<string>(), TimeSpan.FromSeconds(60), Logs, "succeeded");
        Assert.Equal(2, done["counts"]!["succeeded"]!.GetValue<int>());
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(5.5), $"two 6 MiB pulls sharing 2 MiB/s took only {clock.Elapsed.TotalSeconds:F1} s");
        var desired = (await coordinator.GetAgentAsync("budget-a"))!["desired"]!["drives"]![0]!;
        Assert.Equal(1024 * 1024, desired["pull"]!["maxBytesPerSecond"]!.GetValue<long>());
    }
}
