using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using MsdFleet.FleetSimulator;
using MsdFleet.IntegrationTests.Infrastructure;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// Rollouts against simulated agents (bench/FleetSimulator: real MQTT sessions with their own credentials,
/// verifying the signed desired state): waves in order, the concurrency cap, an offline agent executed when
/// it returns, the failure threshold and retry-failed, cancel with revert, and bad requests that start nothing.
/// </summary>
public sealed class RolloutTests : IAsyncLifetime
{
    private CoordinatorInstance? _coordinator;
    private CoordinatorInstance C => _coordinator!;

    public async Task InitializeAsync() => _coordinator = await CoordinatorInstance.StartAsync();

    public async Task DisposeAsync()
    {
        if (_coordinator is not null)
            await _coordinator.DisposeAsync();
    }

    private async Task<SimulatedFleet> FleetAsync(int count, Func<int, string> site, string prefix = "sim")
    {
        var key = ECDsa.Create();
        var signing = (await C.Http.GetFromJsonAsync<JsonObject>("api/v1/signing-key"))!;
        key.ImportSubjectPublicKeyInfo(Convert.FromBase64String(signing["publicKey"]!.GetValue<string>()), out _);
        var agents = new List<(string, string, IReadOnlyDictionary<string, string>?)>();
        for (var i = 0; i < count; i++)
        {
            var id = $"{prefix}-{i:D3}";
            agents.Add((id, await C.CreateAgentSecretAsync(id), null));
            using var put = await C.Http.PutAsJsonAsync($"api/v1/agents/{id}/labels", new { labels = new Dictionary<string, string> { ["site"] = site(i) } });
            put.EnsureSuccessStatusCode();
        }
        var fleet = new SimulatedFleet(agents, C.BrokerUrl, new TopicNames(C.TopicPrefix), key);
        await fleet.ConnectAsync();
        await Eventually.WaitAsync(async () => (await C.Http.GetFromJsonAsync<JsonObject>("api/v1/fleet/summary"))!["counts"]!["online"]!.GetValue<long>() >= count,
            TimeSpan.FromSeconds(30), "the simulated agents online");
        return fleet;
    }

    private async Task<string> UploadAsync(string name, int seed)
    {
        var bytes = new byte[300_000 + seed];
        new Random(seed).NextBytes(bytes);
        using var put = await C.Http.PutAsync($"api/v1/images/{name}", new ByteArrayContent(bytes));
        Assert.True(put.IsSuccessStatusCode, await put.Content.ReadAsStringAsync());
        return (await put.Content.ReadFromJsonAsync<JsonObject>())!["digest"]!.GetValue<string>();
    }

    private async Task<JsonObject> CreateAsync(object body)
    {
        using var create = await C.Http.PostAsJsonAsync("api/v1/rollouts", body);
        var text = await create.Content.ReadAsStringAsync();
        Assert.True(create.StatusCode == HttpStatusCode.Created, text);
        return JsonNode.Parse(text)!.AsObject();
    }

    private async Task<JsonObject> WaitForStateAsync(string id, TimeSpan timeout, params string[] states) =>
        await Eventually.WaitAsync(async () =>
        {
            var view = (await C.Http.GetFromJsonAsync<JsonObject>($"api/v1/rollouts/{id}"))!;
            return states.Contains(view["state"]!.GetValue<string>()) ? view : null;
        }, timeout, $"rollout {id} to be {string.Join(" or ", states)}",
            () => C.Http.GetStringAsync($"api/v1/rollouts/{id}").GetAwaiter().GetResult());

    [Fact]
    public async Task ThreeWaves_InOrder_NeverMoreThanTheCapPulling_AnOfflineAgentDoneWhenItReturns_EveryAgentAttached()
    {
        await using var fleet = await FleetAsync(12, i => i % 2 == 0 ? "ams1" : "fra2");
        var digest = await UploadAsync("wave.iso", 1);
        var received = new System.Collections.Concurrent.ConcurrentDictionary<string, DateTimeOffset>();
        var done = new System.Collections.Concurrent.ConcurrentDictionary<string, DateTimeOffset>();
        foreach (var agent in fleet.Agents)
        {
            agent.PullTime = TimeSpan.FromMilliseconds(400); // not cached: each one pulls for a while
            agent.Reported += (a, report) =>
            {
                if (report.Transfers.Any(t => t.ImageDigest == digest))
                    received.TryAdd(a.Id, DateTimeOffset.UtcNow);
                if (report.Drives.Any(d => d.Index == 0 && d.ImageDigest == digest))
                    done.TryAdd(a.Id, DateTimeOffset.UtcNow);
            };
        }
        var late = fleet["sim-011"];
        late.Vanish(); // off the network (its will says offline) when its wave comes
        await Eventually.WaitAsync(async () => (await C.GetAgentAsync(late.Id))!["online"]!.GetValue<bool>() == false, TimeSpan.FromSeconds(30), "sim-011 offline");

        var rollout = await CreateAsync(new
        {
            name = "install media", image = "wave.iso", mode = "cdrom", selector = "site in (ams1,fra2)",
            waves = new object[] { 2, "50%", "100%" }, maxConcurrentPulls = 3, failureThreshold = new { percent = 20, minExecuted = 3 },
        });
        var id = rollout["id"]!.GetValue<string>();
        Assert.Equal([2, 4, 6], rollout["waves"]!.AsArray().Select(w => w!["size"]!.GetValue<int>()));
        // Everyone but the offline agent gets done; the rollout waits for it.
        await Eventually.WaitAsync(() => done.Count == 11, TimeSpan.FromSeconds(60), "11 agents attached",
            () => C.Http.GetStringAsync($"api/v1/rollouts/{id}").GetAwaiter().GetResult());
        Assert.Equal("running", (await C.Http.GetFromJsonAsync<JsonObject>($"api/v1/rollouts/{id}"))!["state"]!.GetValue<string>());
        await late.ConnectAsync(CancellationToken.None);
        var finished = await WaitForStateAsync(id, TimeSpan.FromSeconds(60), "succeeded");
        Assert.Equal(12, finished["counts"]!["succeeded"]!.GetValue<int>());

        // Waves in order: every agent of a wave was told only after every agent of the wave before had attached.
        var waves = (await C.Http.GetFromJsonAsync<JsonArray>($"api/v1/rollouts/{id}/executions"))!
            .GroupBy(e => e!["wave"]!.GetValue<int>()).OrderBy(g => g.Key).Select(g => g.Select(e => e!["agentId"]!.GetValue<string>()).ToList()).ToList();
        Assert.Equal(3, waves.Count);
        for (var w = 1; w < waves.Count; w++)
            Assert.True(waves[w].Min(a => received[a]) >= waves[w - 1].Max(a => done[a]), $"wave {w} started before wave {w - 1} ended");
        // Never more than three pulling at once (measured on the agents' side).
        var moments = received.Select(r => (r.Value, +1)).Concat(done.Select(d => (d.Value, -1))).OrderBy(m => m.Value).ThenBy(m => m.Item2);
        var running = 0;
        var peak = 0;
        foreach (var (_, delta) in moments)
            peak = Math.Max(peak, running += delta);
        Assert.InRange(peak, 1, 3);
        // Nothing was refused and no agent ever went back a generation.
        Assert.All(fleet.Agents, a => Assert.Empty(a.Rejected));
        Assert.All(fleet.Agents, a => Assert.Equal(a.AppliedGenerations.Order(), a.AppliedGenerations));
        // Audited, with the rollout as the actor of each assignment.
        var mounts = (await C.Http.GetFromJsonAsync<JsonArray>($"api/v1/audit?actor=rollout:{id}&action=drive.mount"))!;
        Assert.Equal(12, mounts.Count);
    }

    [Fact]
    public async Task FailuresAboveTheThreshold_StopTheRolloutWithTheReason_TheFailedListed_RetryFailedFinishesIt()
    {
        await using var fleet = await FleetAsync(8, _ => "lab");
        var digest = await UploadAsync("fail.img", 2);
        foreach (var agent in fleet.Agents)
            agent.Cache(digest);
        foreach (var agent in fleet.Agents.Take(3))
            agent.FailWith("no space left on device");
        var rollout = await CreateAsync(new
        {
            name = "will fail", image = "fail.img", mode = "flash", selector = "site=lab", maxConcurrentPulls = 8,
            failureThreshold = new { percent = 25, minExecuted = 4 },
        });
        var id = rollout["id"]!.GetValue<string>();
        var stopped = await WaitForStateAsync(id, TimeSpan.FromSeconds(60), "failed");
        Assert.Contains("failure threshold", stopped["reason"]!.GetValue<string>(), StringComparison.Ordinal);
        var failed = stopped["failures"]!.AsArray();
        Assert.Equal(["sim-000", "sim-001", "sim-002"], failed.Select(f => f!["agentId"]!.GetValue<string>()).Order(StringComparer.Ordinal));
        Assert.All(failed, f => Assert.Equal("no space left on device", f!["error"]!.GetValue<string>()));

        foreach (var agent in fleet.Agents)
            agent.FailWith(null);
        using (var retry = await C.Http.PostAsync($"api/v1/rollouts/{id}/retry-failed", null))
            Assert.True(retry.IsSuccessStatusCode, await retry.Content.ReadAsStringAsync());
        var finished = await WaitForStateAsync(id, TimeSpan.FromSeconds(60), "succeeded");
        Assert.Equal(8, finished["counts"]!["succeeded"]!.GetValue<int>());
    }

    [Fact]
    public async Task CancelWithRevert_PutsBackWhatTheDrivesHad_QueuedAgentsAreNotTouched()
    {
        await using var fleet = await FleetAsync(4, _ => "ams1", prefix: "rev");
        var before = await UploadAsync("before.iso", 3);
        var digest = await UploadAsync("after.iso", 4);
        foreach (var agent in fleet.Agents)
        {
            agent.Cache(before);
            (await C.SetDriveAsync(agent.Id, 0, new { image = "before.iso", mode = "cdrom" })).EnsureSuccessStatusCode();
        }
        fleet["rev-001"].PullTime = TimeSpan.FromSeconds(600); // stays pulling: in flight when the cancel comes
        fleet["rev-000"].Cache(digest);
        var rollout = await CreateAsync(new { name = "to revert", image = "after.iso", mode = "cdrom", selector = "site=ams1", maxConcurrentPulls = 1,
            waves = new object[] { 1, "100%" } });
        var id = rollout["id"]!.GetValue<string>();
        await Eventually.WaitAsync(async () => (await C.Http.GetFromJsonAsync<JsonObject>($"api/v1/rollouts/{id}"))!["counts"]!["pulling"]!.GetValue<int>() == 1
            && (await C.GetAgentAsync("rev-001"))!["desired"]!["drives"]![0]!["digest"]!.GetValue<string>() == digest,
            TimeSpan.FromSeconds(60), "rev-000 done and rev-001 pulling");

        using (var cancel = await C.Http.PostAsJsonAsync($"api/v1/rollouts/{id}/cancel", new { revert = true }))
            Assert.Equal(HttpStatusCode.Accepted, cancel.StatusCode);
        var cancelled = await WaitForStateAsync(id, TimeSpan.FromSeconds(60), "cancelled");
        Assert.Equal(2, cancelled["counts"]!["reverted"]!.GetValue<int>());
        Assert.Equal(2, cancelled["counts"]!["cancelled"]!.GetValue<int>());
        foreach (var agent in fleet.Agents)
            Assert.Equal(before, (await C.GetAgentAsync(agent.Id))!["desired"]!["drives"]![0]!["digest"]!.GetValue<string>());
        using var again = await C.Http.PostAsync($"api/v1/rollouts/{id}/pause", null);
        Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
    }

    [Fact]
    public async Task BadRollouts_AreRefusedWithAProblem_NothingStarted()
    {
        await C.CreateAgentSecretAsync("bad-001");
        (await C.Http.PutAsJsonAsync("api/v1/agents/bad-001/labels", new { labels = new Dictionary<string, string> { ["site"] = "ams1" } })).EnsureSuccessStatusCode();
        await UploadAsync("ok.iso", 5);
        async Task RefusedAsync(object body, HttpStatusCode status, string code)
        {
            using var response = await C.Http.PostAsJsonAsync("api/v1/rollouts", body);
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == status, text);
            Assert.Equal(code, JsonNode.Parse(text)!["code"]!.GetValue<string>());
        }
        await RefusedAsync(new { name = "x", image = "ok.iso", mode = "cdrom", selector = "site in ams1" }, HttpStatusCode.BadRequest, "invalid-selector");
        await RefusedAsync(new { name = "x", image = "ok.iso", mode = "cdrom", selector = "site=nowhere" }, HttpStatusCode.Conflict, "selector-matches-nothing");
        await RefusedAsync(new { name = "x", image = "missing.iso", mode = "cdrom", selector = "site=ams1" }, HttpStatusCode.NotFound, "image-not-found");
        await RefusedAsync(new { name = "x", image = "ok.iso", mode = "cdrom", waves = new object[] { "50%", "20%", "100%" } }, HttpStatusCode.BadRequest, "overlapping-waves");
        await RefusedAsync(new { name = "x", image = "ok.iso", mode = "cdrom", waves = new object[] { "50%" } }, HttpStatusCode.BadRequest, "invalid-waves");
        await RefusedAsync(new { name = "x", image = "ok.iso", mode = "cdrom", failureThreshold = new { percent = 101, minExecuted = 1 } }, HttpStatusCode.BadRequest, "invalid-threshold");
        await RefusedAsync(new { name = "x", image = "ok.iso", stageOnly = true, connect = true }, HttpStatusCode.BadRequest, "invalid-stage-only");
        await RefusedAsync(new { name = "x", image = "ok.iso", mode = "cdrom", siteMaxBytesPerSecond = 10 }, HttpStatusCode.BadRequest, "invalid-bandwidth");
        await RefusedAsync(new { name = "x", image = "ok.iso", mode = "cdrom", maxConcurrentPullsPerSite = 0 }, HttpStatusCode.BadRequest, "invalid-max-concurrent-pulls");
        await RefusedAsync(new { name = "x", image = "ok.iso", mode = "cdrom", downloadWindows = new[] { new { days = Array.Empty<string>(), start = "22:00", end = "06:00" } } },
            HttpStatusCode.BadRequest, "window-never-opens");
        await RefusedAsync(new { name = "x", image = "ok.iso", mode = "cdrom", downloadWindows = new[] { new { start = "22:00", end = "22:00" } } },
            HttpStatusCode.BadRequest, "window-never-opens");
        await RefusedAsync(new { name = "x", image = "ok.iso", mode = "cdrom", downloadWindows = new[] { new { start = "22:00", end = "06:00", timeZone = "Mars/Olympus" } } },
            HttpStatusCode.BadRequest, "window-never-opens");
        await RefusedAsync(new { name = "x", image = "ok.iso", mode = "cdrom", downloadWindows = new[] { new { start = "25:00", end = "06:00" } } },
            HttpStatusCode.BadRequest, "invalid-download-windows");
        // A window that opens in three hours, but the rollout must be over within one: it would open after the deadline.
        var later = DateTimeOffset.UtcNow.AddHours(3);
        await RefusedAsync(new { name = "x", image = "ok.iso", mode = "cdrom", deadlineHours = 1,
                downloadWindows = new[] { new { start = later.ToString("HH:mm", System.Globalization.CultureInfo.InvariantCulture), end = later.AddHours(1).ToString("HH:mm", System.Globalization.CultureInfo.InvariantCulture) } } },
            HttpStatusCode.BadRequest, "windows-after-deadline");
        await RefusedAsync(new { name = "x", image = "ok.iso", mode = "cdrom", colour = "blue" }, HttpStatusCode.BadRequest, "unknown-field");
        await RefusedAsync(new { name = "x", image = "ok.iso", mode = "cdrom", readOnly = false }, HttpStatusCode.BadRequest, "invalid-mode");
        await RefusedAsync(new { image = "ok.iso", mode = "cdrom" }, HttpStatusCode.BadRequest, "invalid-name");
        Assert.Empty((await C.Http.GetFromJsonAsync<JsonArray>("api/v1/rollouts"))!);
        Assert.Null((await C.GetAgentAsync("bad-001"))!["desired"]);

        // Two active rollouts may not fight over one drive.
        var first = await CreateAsync(new { name = "first", image = "ok.iso", mode = "cdrom", selector = "site=ams1", startAt = DateTimeOffset.UtcNow.AddHours(1) });
        Assert.Equal("scheduled", first["state"]!.GetValue<string>());
        await RefusedAsync(new { name = "second", image = "ok.iso", mode = "cdrom", selector = "site=ams1" }, HttpStatusCode.Conflict, "rollout-conflict");
    }
}
