using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Microsoft.Playwright;
using MsdFleet.FleetSimulator;
using MsdFleet.IntegrationTests.Infrastructure;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// The web UI in a real Chromium: log in, upload an image by the browser-side push protocol with a
/// visible progress bar, mount it on a running agent, watch the drive change live (no reload), eject,
/// delete with confirmation. The browser's chunker must cut exactly like the Coordinator's: the same
/// file uploaded again through the API adds no new bytes. The fleet table with hundreds of simulated agents
/// (counts, state chips, search, selector, sites, pages, one row changed per live event), and a rollout created
/// from the image library and followed to the end on its page.
/// </summary>
public sealed class WebUiTests : IAsyncLifetime
{
    private const string Password = "a long enough password";
    private readonly string _work = TestPaths.NewTempDir("webui");

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        Directory.Delete(_work, true);
        return Task.CompletedTask;
    }

    [Fact]
    public async Task LogIn_Upload_Mount_WatchLive_Eject_Delete()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        (await coordinator.Http.PostAsJsonAsync("api/v1/users", new { name = "ada", password = Password, role = "admin" })).EnsureSuccessStatusCode();
        await using var agent = new AgentProcess("ui-agent", await coordinator.CreateAgentSecretAsync("ui-agent"), coordinator, luns: 2);
        agent.Start();
        await coordinator.WaitForAgentAsync("ui-agent", a => a["online"]!.GetValue<bool>() && a["drives"] is not null, "online", diagnostics: () => agent.Log);
        var (path, sha256) = await TestImages.CreateAsync(_work, "browser.img", 24L * 1024 * 1024 + 4321, seed: 21);

        await using var browser = await Browser.StartAsync();
        await browser.RunAsync(nameof(LogIn_Upload_Mount_WatchLive_Eject_Delete), async page =>
        {
            var consoleErrors = new List<string>();
            page.Console += (_, m) =>
            {
                // Chromium logs every 401 answer (the session probe before login, the wrong password) and the
                // connection the test cuts as errors; anything else is a defect of the page.
                if (m.Type == "error" && !m.Text.Contains("status of 401", StringComparison.Ordinal) && !m.Text.Contains("ERR_CONNECTION_RESET", StringComparison.Ordinal))
                    consoleErrors.Add(m.Text);
            };
            await page.GotoAsync(coordinator.BaseUrl.ToString());
            await page.Locator("#login-form").WaitForAsync();
            await page.FillAsync("input[name=username]", "ada");
            await page.FillAsync("input[name=password]", "wrong password!!");
            await page.ClickAsync("#login-form button[type=submit]");
            await Assertions.Expect(page.Locator("#login-error")).ToContainTextAsync("wrong password");
            await page.FillAsync("input[name=password]", Password);
            await page.ClickAsync("#login-form button[type=submit]");
            await Assertions.Expect(page.Locator("#who")).ToHaveTextAsync("ada (admin)");
            await Assertions.Expect(page.Locator("#live")).ToHaveTextAsync("live");
            await Assertions.Expect(page.Locator("tr[data-agent='ui-agent'][data-online='true']")).ToBeVisibleAsync();
            await page.EvaluateAsync("() => { window.__noReload = 1; }");

            // Upload: the progress bar shows up; the connection breaks on the second batch of chunks (as a
            // flaky link would); the page asks what is still missing and finishes.
            var chunkPosts = 0;
            await page.RouteAsync("**/api/v1/uploads/*/chunks", async route =>
            {
                if (Interlocked.Increment(ref chunkPosts) == 2)
                    await route.AbortAsync("connectionreset");
                else
                    await route.ContinueAsync();
            });
            await page.SetInputFilesAsync("#file-input", path);
            await page.Locator(".upload[data-upload='browser.img'] [role=progressbar]").WaitForAsync();
            await page.Locator(".upload[data-upload='browser.img'][data-done='true']").WaitForAsync(new() { Timeout = 120_000 });
            // Cut by the WebAssembly loop (the page's CSP allows compiling it), not the slower JavaScript fallback.
            Assert.Equal("wasm", await page.Locator(".upload[data-upload='browser.img']").GetAttributeAsync("data-chunker"));
            await Assertions.Expect(page.Locator("#images tr[data-image='browser.img']")).ToBeVisibleAsync();
            Assert.True(chunkPosts >= 4, $"{chunkPosts} chunk requests: 3 batches plus the one that was cut");
            await page.UnrouteAllAsync();
            var image = JsonNode.Parse(await coordinator.Http.GetStringAsync("api/v1/images"))!.AsArray()
                .Single(i => i!["name"]!.GetValue<string>() == "browser.img")!;
            Assert.Equal(sha256, image["sha256"]!.GetValue<string>());
            var digest = image["digest"]!.GetValue<string>();

            // Same bytes through the API: the browser's chunks are the server's chunks.
            var again = await coordinator.UploadAsync("browser-copy.img", path);
            Assert.Equal(0, again["newBytes"]!.GetValue<long>());
            Assert.Equal(digest, again["digest"]!.GetValue<string>());

            // Mount through the dialog; the agent row changes live.
            await page.ClickAsync("tr[data-agent='ui-agent'] button:has-text('Mount')");
            var dialog = page.Locator("#mount-dialog");
            await Assertions.Expect(dialog).ToBeVisibleAsync();
            await dialog.Locator("select[name=drive]").SelectOptionAsync("1");
            await dialog.Locator("select[name=image]").SelectOptionAsync("browser.img");
            await dialog.Locator("input[name=mode][value=cdrom]").CheckAsync();
            await dialog.Locator("#mount-ok").ClickAsync();
            await Assertions.Expect(dialog).ToBeHiddenAsync();
            var drive = page.Locator($"tr[data-agent='ui-agent'] .drive[data-drive='1'][data-connected='true'][data-image='{digest}']");
            await drive.WaitForAsync(new() { Timeout = 90_000 });
            await Assertions.Expect(drive).ToContainTextAsync("browser.img cdrom ro connected");
            Assert.Equal(sha256, TestImages.Sha256Of(File.ReadAllText(Path.Combine(Path.GetDirectoryName(agent.LunPath)!, "lun.1", "file")).Trim()));
            await Assertions.Expect(page.Locator("#images tr[data-image='browser.img']")).ToContainTextAsync("ui-agent/1");
            if (Environment.GetEnvironmentVariable("MSDFLEET_SCREENSHOTS") is { Length: > 0 } shots)
                await page.ScreenshotAsync(new() { Path = Path.Combine(shots, "web-ui.png"), FullPage = true }); // for the docs

            // Eject, live again.
            await drive.Locator("button:has-text('Eject')").ClickAsync();
            await page.Locator("tr[data-agent='ui-agent'] .drive[data-drive='1'][data-connected='false']").WaitForAsync(new() { Timeout = 60_000 });
            Assert.Equal(string.Empty, File.ReadAllText(Path.Combine(Path.GetDirectoryName(agent.LunPath)!, "lun.1", "file")).Trim());

            // A writable drive: its working copy shows up, the server's writes show as unsaved, Save… makes a new image.
            await page.ClickAsync("tr[data-agent='ui-agent'] button:has-text('Mount')");
            await dialog.Locator("select[name=drive]").SelectOptionAsync("0");
            await dialog.Locator("select[name=image]").SelectOptionAsync("browser.img");
            await dialog.Locator("input[name=mode][value=flash]").CheckAsync();
            await dialog.Locator("input[name=readOnly]").UncheckAsync();
            await dialog.Locator("#mount-ok").ClickAsync();
            var writable = page.Locator("tr[data-agent='ui-agent'] .drive[data-drive='0'][data-connected='true']");
            await Assertions.Expect(writable).ToContainTextAsync("rw connected", new() { Timeout = 90_000 });
            await Assertions.Expect(writable).ToContainTextAsync("working copy", new() { Timeout = 30_000 });
            agent.HostWrites(0, 4096, "written by the server"u8.ToArray());
            await Assertions.Expect(writable).ToContainTextAsync("unsaved writes", new() { Timeout = 30_000 });
            await writable.Locator("button:has-text('Save')").ClickAsync();
            var save = page.Locator("#snapshot-dialog");
            await Assertions.Expect(save).ToBeVisibleAsync();
            await save.Locator("input[name=name]").FillAsync("ui-saved.img");
            await save.Locator("#snapshot-ok").ClickAsync();
            await Assertions.Expect(save.Locator("#snapshot-progress")).ToContainTextAsync("Saved as ui-saved.img.", new() { Timeout = 90_000 });
            await save.Locator("button[value=cancel]").ClickAsync();
            await Assertions.Expect(page.Locator("#images tr[data-image='ui-saved.img']")).ToHaveCountAsync(1);
            await Assertions.Expect(writable).Not.ToContainTextAsync("unsaved writes", new() { Timeout = 30_000 });
            await writable.Locator("button:has-text('Eject')").ClickAsync(); // browser-copy.img (same digest) can then be deleted
            await page.Locator("tr[data-agent='ui-agent'] .drive[data-drive='0'][data-connected='false']").WaitForAsync(new() { Timeout = 60_000 });

            // Delete with confirmation.
            await page.ClickAsync("#images tr[data-image='browser-copy.img'] button:has-text('Delete')");
            await Assertions.Expect(page.Locator("#confirm-dialog")).ToBeVisibleAsync();
            await page.ClickAsync("#confirm-ok");
            await Assertions.Expect(page.Locator("#images tr[data-image='browser-copy.img']")).ToHaveCountAsync(0);

            Assert.Equal(1, await page.EvaluateAsync<int>("() => window.__noReload"));
            Assert.Empty(consoleErrors);
        });
    }

    [Fact]
    public async Task ApiReference_IsServed_AndTheOpenApiDocumentListsTheRoutes()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var document = JsonNode.Parse(await coordinator.Http.GetStringAsync("openapi/v1.json"))!;
        var paths = document["paths"]!.AsObject().Select(p => p.Key).ToList();
        Assert.Contains("/api/v1/agents/{agentId}/drives/{index}", paths);
        Assert.Contains("/api/v1/images/import", paths);
        Assert.Contains("/api/v1/events", paths);
        using var anonymous = coordinator.NewClient();
        Assert.Equal(System.Net.HttpStatusCode.Unauthorized, (await anonymous.GetAsync("openapi/v1.json")).StatusCode);

        (await coordinator.Http.PostAsJsonAsync("api/v1/users", new { name = "reader", password = Password, role = "viewer" })).EnsureSuccessStatusCode();
        await using var browser = await Browser.StartAsync();
        await browser.RunAsync(nameof(ApiReference_IsServed_AndTheOpenApiDocumentListsTheRoutes), async page =>
        {
            await page.GotoAsync(coordinator.BaseUrl.ToString());
            await page.FillAsync("input[name=username]", "reader");
            await page.FillAsync("input[name=password]", Password);
            await page.ClickAsync("#login-form button[type=submit]");
            await Assertions.Expect(page.Locator("#who")).ToHaveTextAsync("reader (viewer)");
            // A viewer sees no upload, mount or delete controls.
            await Assertions.Expect(page.Locator("#dropzone")).ToBeHiddenAsync();
            await page.GotoAsync(new Uri(coordinator.BaseUrl, "api/docs/").ToString());
            await Assertions.Expect(page.Locator("text=MsdFleet Coordinator API").First).ToBeVisibleAsync();
            await Assertions.Expect(page.GetByText("/api/v1/images/import").First).ToBeVisibleAsync();
        });
    }

    [Fact]
    public async Task FleetTable_ManyAgents_CountsChipsSearchSelectorSitesAndPages_ALiveEventChangesOnlyItsRowAndCounts()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        await AddUserAsync(coordinator, "ops", "operator");
        // 240 connected simulated agents over three sites (sim-000 … sim-239, site by i % 3) and 60 that never
        // connected (off-000 … off-059: offline, no site). By id the first page is off-000 … sim-039.
        string[] sites = ["ams1", "fra2", "lon3"];
        await using var fleet = await SimulatedFleetAsync(coordinator, 240, i => sites[i % 3]);
        for (var i = 0; i < 60; i++)
            await coordinator.CreateAgentSecretAsync($"off-{i:D3}");

        await using var browser = await Browser.StartAsync();
        await browser.RunAsync(nameof(FleetTable_ManyAgents_CountsChipsSearchSelectorSitesAndPages_ALiveEventChangesOnlyItsRowAndCounts), async page =>
        {
            var consoleErrors = WatchConsole(page);
            var listRequests = 0;
            var summaryRequests = 0;
            page.Request += (_, r) =>
            {
                if (r.Url.Contains("/api/v1/agents?", StringComparison.Ordinal))
                    Interlocked.Increment(ref listRequests);
                if (r.Url.Contains("/api/v1/fleet/summary", StringComparison.Ordinal))
                    Interlocked.Increment(ref summaryRequests);
            };
            await LogInAsync(page, coordinator, "ops");
            var chip = (string state) => page.Locator($"#fleet-chips .chip[data-state='{state}']");
            var rows = page.Locator("#fleet-lists tr[data-agent]");
            var range = page.Locator("#fleet-lists .pager .range");

            // Counts from the summary; one page of 100 rows, not 300.
            await Assertions.Expect(chip("all").Locator(".count")).ToHaveTextAsync("300");
            await Assertions.Expect(chip("online").Locator(".count")).ToHaveTextAsync("240");
            await Assertions.Expect(chip("offline").Locator(".count")).ToHaveTextAsync("60");
            await Assertions.Expect(rows).ToHaveCountAsync(100);
            await Assertions.Expect(range).ToHaveTextAsync("1–100 of 300");
            await page.ClickAsync("#fleet-lists .pager button[data-page=next]");
            await Assertions.Expect(range).ToHaveTextAsync("101–200 of 300");
            await Assertions.Expect(rows.First).ToHaveAttributeAsync("data-agent", "sim-040");
            await Assertions.Expect(rows).ToHaveCountAsync(100);
            await page.ClickAsync("#fleet-lists .pager button[data-page=prev]");
            await Assertions.Expect(rows.First).ToHaveAttributeAsync("data-agent", "off-000");

            // A chip filters by state; pressed again it lets go.
            await chip("offline").ClickAsync();
            await Assertions.Expect(chip("offline")).ToHaveAttributeAsync("aria-pressed", "true");
            await Assertions.Expect(rows).ToHaveCountAsync(60);
            await Assertions.Expect(page.Locator("#fleet-lists tr[data-agent][data-online='true']")).ToHaveCountAsync(0);
            await Assertions.Expect(range).ToHaveTextAsync("1–60 of 60");
            await chip("offline").ClickAsync();
            await Assertions.Expect(rows).ToHaveCountAsync(100);

            // Free text matches ids and label values; the counts follow.
            await page.FillAsync("#fleet-q", "lon3");
            await Assertions.Expect(chip("all").Locator(".count")).ToHaveTextAsync("80");
            await Assertions.Expect(rows).ToHaveCountAsync(80);
            await Assertions.Expect(page.Locator("#fleet-lists tr[data-agent]:not([data-site='lon3'])")).ToHaveCountAsync(0);
            await page.FillAsync("#fleet-q", "sim-23");
            await Assertions.Expect(rows).ToHaveCountAsync(10);
            await page.FillAsync("#fleet-q", "");

            // A selector: the server's problem shown inline, then a valid one narrowing the rows.
            await page.FillAsync("#fleet-selector", "site in ams1");
            await Assertions.Expect(page.Locator("#fleet-error")).ToContainTextAsync("Invalid selector");
            await Assertions.Expect(page.Locator("#fleet-selector")).ToHaveAttributeAsync("aria-invalid", "true");
            await page.FillAsync("#fleet-selector", "site in (ams1,fra2),!maintenance");
            await Assertions.Expect(page.Locator("#fleet-error")).ToHaveTextAsync("");
            await Assertions.Expect(chip("all").Locator(".count")).ToHaveTextAsync("160");
            await Assertions.Expect(page.Locator("#fleet-lists tr[data-agent][data-site='lon3']")).ToHaveCountAsync(0);
            await page.FillAsync("#fleet-selector", "");
            await Assertions.Expect(chip("all").Locator(".count")).ToHaveTextAsync("300");

            // Grouped by site: a section per site with its counts; a section's rows load when it opens.
            await page.CheckAsync("#fleet-group");
            await Assertions.Expect(page.Locator("#fleet-lists details.site")).ToHaveCountAsync(4);
            var ams1 = page.Locator("#fleet-lists details.site[data-site='ams1']");
            await Assertions.Expect(ams1.Locator("summary")).ToContainTextAsync("80 agents · 80 online");
            await Assertions.Expect(page.Locator("#fleet-lists details.site[data-site='']").Locator("summary")).ToContainTextAsync("(no site) 60 agents · 60 offline");
            await Assertions.Expect(rows).ToHaveCountAsync(0);
            await ams1.Locator("summary").ClickAsync();
            await Assertions.Expect(ams1.Locator("tr[data-agent]")).ToHaveCountAsync(80);
            await Assertions.Expect(ams1.Locator("tr[data-agent]:not([data-site='ams1'])")).ToHaveCountAsync(0);
            await Assertions.Expect(ams1.Locator(".pager .range")).ToHaveTextAsync("1–80 of 80");

            // An agent dies: its row and the counters change; no list is fetched again.
            await page.EvaluateAsync("() => { window.__noReload = 1; }");
            var listsBefore = Volatile.Read(ref listRequests);
            fleet["sim-000"].Vanish();
            await Assertions.Expect(ams1.Locator("tr[data-agent='sim-000'][data-online='false']")).ToBeVisibleAsync(new() { Timeout = 60_000 });
            await Assertions.Expect(chip("offline").Locator(".count")).ToHaveTextAsync("61");
            await Assertions.Expect(ams1.Locator("summary")).ToContainTextAsync("80 agents · 79 online · 1 offline");
            await Assertions.Expect(ams1.Locator("tr[data-agent]")).ToHaveCountAsync(80);
            Assert.Equal(listsBefore, Volatile.Read(ref listRequests));
            Assert.Equal(1, await page.EvaluateAsync<int>("() => window.__noReload"));
            Assert.True(Volatile.Read(ref summaryRequests) < 40, $"{summaryRequests} summary requests: refreshes are throttled");
            Assert.Empty(consoleErrors);
        });
    }

    [Fact]
    public async Task Rollout_FromTheImageLibrary_SelectorPreview_FailureShown_RetryFailedReachesSucceeded_ViewerCannotAct()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        await AddUserAsync(coordinator, "ops", "operator");
        await AddUserAsync(coordinator, "reader", "viewer");
        await using var fleet = await SimulatedFleetAsync(coordinator, 8, i => i % 2 == 0 ? "ams1" : "fra2");
        var bytes = new byte[200_000];
        new Random(7).NextBytes(bytes);
        using (var put = await coordinator.Http.PutAsync("api/v1/images/roll.iso", new ByteArrayContent(bytes)))
        {
            Assert.True(put.IsSuccessStatusCode, await put.Content.ReadAsStringAsync());
            var digest = (await put.Content.ReadFromJsonAsync<JsonObject>())!["digest"]!.GetValue<string>();
            foreach (var agent in fleet.Agents)
                agent.Cache(digest);
        }
        // sim-000 is the first wave (agents go in id order) and fails: 1 of 1 is over the 10 % threshold.
        fleet["sim-000"].FailWith("disk on fire");

        await using var browser = await Browser.StartAsync();
        await browser.RunAsync(nameof(Rollout_FromTheImageLibrary_SelectorPreview_FailureShown_RetryFailedReachesSucceeded_ViewerCannotAct), async page =>
        {
            var consoleErrors = WatchConsole(page);
            await LogInAsync(page, coordinator, "ops");
            await page.ClickAsync("#images tr[data-image='roll.iso'] button:has-text('Roll out')");
            var dialog = page.Locator("#rollout-dialog");
            await Assertions.Expect(dialog).ToBeVisibleAsync();
            await Assertions.Expect(dialog.Locator("#rollout-preview-count")).ToHaveTextAsync("8 agents match");
            await dialog.Locator("input[name=name]").FillAsync("ui rollout");
            await dialog.Locator("input[name=selector]").FillAsync("site in ams1");
            await Assertions.Expect(dialog.Locator("#rollout-selector-error")).ToContainTextAsync("Invalid selector");
            await dialog.Locator("input[name=selector]").FillAsync("site=ams1");
            await Assertions.Expect(dialog.Locator("#rollout-preview-count")).ToHaveTextAsync("4 agents match");
            await Assertions.Expect(dialog.Locator("#rollout-selector-error")).ToHaveTextAsync("");
            await Assertions.Expect(dialog.Locator("#rollout-preview")).ToContainTextAsync("sim-000, sim-002, sim-004, sim-006");
            await dialog.Locator("input[name=maxConcurrentPulls]").FillAsync("2");
            await dialog.Locator("input[name=failurePercent]").FillAsync("10");
            await dialog.Locator("input[name=minExecuted]").FillAsync("1");

            // The server's problem is shown in the form, and nothing starts.
            await dialog.Locator("input[name=waves]").FillAsync("50%,20%,100%");
            await dialog.Locator("#rollout-ok").ClickAsync();
            await Assertions.Expect(dialog.Locator("#rollout-error")).ToContainTextAsync("must grow");
            Assert.Empty((await coordinator.Http.GetFromJsonAsync<JsonArray>("api/v1/rollouts"))!);
            await dialog.Locator("input[name=waves]").FillAsync("1,100%");
            await dialog.Locator("#rollout-ok").ClickAsync();
            await Assertions.Expect(dialog).ToBeHiddenAsync();

            // The rollout page follows the live events: the threshold stops it, the failure is listed.
            var stateBadge = page.Locator("#rollout-page #rollout-state");
            await Assertions.Expect(page.Locator("#rollout-page")).ToBeVisibleAsync();
            await Assertions.Expect(stateBadge).ToHaveAttributeAsync("data-state", "failed", new() { Timeout = 60_000 });
            await Assertions.Expect(page.Locator("#rollout-reason")).ToContainTextAsync("failure threshold");
            await Assertions.Expect(page.Locator("#rollout-failures tr[data-agent='sim-000']")).ToContainTextAsync("disk on fire");
            await Assertions.Expect(page.Locator("#rollout-page .waves li")).ToHaveCountAsync(2);
            await Assertions.Expect(page.Locator("#rollout-page .waves li[data-wave='1']")).ToContainTextAsync("0/3 succeeded · 3 queued");

            fleet["sim-000"].FailWith(null);
            await page.ClickAsync("#rollout-page button[data-action='retry-failed']");
            await Assertions.Expect(stateBadge).ToHaveAttributeAsync("data-state", "succeeded", new() { Timeout = 60_000 });
            await Assertions.Expect(page.Locator("#rollout-total")).ToContainTextAsync("4/4 succeeded");
            await Assertions.Expect(page.Locator("#rollout-page .waves li[data-wave='0']")).ToContainTextAsync("1/1 succeeded");
            await Assertions.Expect(page.Locator("#rollout-page .waves li[data-wave='1']")).ToContainTextAsync("3/3 succeeded");
            await Assertions.Expect(page.Locator("#rollout-page button[data-action]")).ToHaveCountAsync(0);
            await Assertions.Expect(page.Locator("#rollout-detail")).Not.ToContainTextAsync("null"); // no reason, no hidden failures: nothing shown
            foreach (var id in (string[])["sim-000", "sim-002", "sim-004", "sim-006"])
                Assert.Equal("roll.iso", (await coordinator.GetAgentAsync(id))!["desired"]!["drives"]![0]!["image"]!.GetValue<string>());
            Assert.Null((await coordinator.GetAgentAsync("sim-001"))!["desired"]);

            await page.ClickAsync("#rollout-page a.back");
            var row = page.Locator("#rollouts tr[data-rollout][data-state='succeeded']");
            await Assertions.Expect(row).ToContainTextAsync("ui rollout");
            await Assertions.Expect(row).ToContainTextAsync("4/4 succeeded");

            // A second one, to fra2 with an image no agent has (each pull takes ten minutes): pause, resume, cancel with revert.
            foreach (var id in (string[])["sim-001", "sim-003", "sim-005", "sim-007"])
                fleet[id].PullTime = TimeSpan.FromMinutes(10);
            using (var put = await coordinator.Http.PutAsync("api/v1/images/slow.iso", new ByteArrayContent(bytes[..150_000])))
                Assert.True(put.IsSuccessStatusCode, await put.Content.ReadAsStringAsync());
            await Assertions.Expect(page.Locator("#images tr[data-image='slow.iso']")).ToBeVisibleAsync();
            await page.ClickAsync("#images tr[data-image='slow.iso'] button:has-text('Roll out')");
            await dialog.Locator("input[name=name]").FillAsync("slow one");
            await dialog.Locator("input[name=selector]").FillAsync("site=fra2");
            await Assertions.Expect(dialog.Locator("#rollout-preview-count")).ToHaveTextAsync("4 agents match");
            await dialog.Locator("input[name=maxConcurrentPulls]").FillAsync("1");
            await dialog.Locator("#rollout-ok").ClickAsync();
            await Assertions.Expect(dialog).ToBeHiddenAsync();
            await Assertions.Expect(page.Locator("#rollout-page h2")).ToContainTextAsync("slow one");
            await Assertions.Expect(page.Locator("#rollout-total")).ToContainTextAsync("0/4 succeeded · 1 pulling · 3 queued", new() { Timeout = 60_000 });
            await page.ClickAsync("#rollout-page button[data-action='pause']");
            await Assertions.Expect(stateBadge).ToHaveAttributeAsync("data-state", "paused");
            await page.ClickAsync("#rollout-page button[data-action='resume']");
            await Assertions.Expect(stateBadge).ToHaveAttributeAsync("data-state", "running");
            await page.ClickAsync("#rollout-page button[data-action='revert']");
            await Assertions.Expect(page.Locator("#confirm-dialog")).ToBeVisibleAsync();
            await page.ClickAsync("#confirm-ok");
            await Assertions.Expect(stateBadge).ToHaveAttributeAsync("data-state", "cancelled", new() { Timeout = 60_000 });
            await Assertions.Expect(page.Locator("#rollout-reason")).ToHaveTextAsync("cancelled; drives reverted");
            await Assertions.Expect(page.Locator("#rollout-total")).ToContainTextAsync("0/4 succeeded · 3 cancelled · 1 reverted");
            await page.ClickAsync("#rollout-page a.back");
            await Assertions.Expect(page.Locator("#rollouts tr[data-rollout]")).ToHaveCountAsync(2);

            // Staging with a site budget and a download window: the form sends them, the page shows them.
            await page.ClickAsync("#images tr[data-image='roll.iso'] button:has-text('Roll out')");
            await dialog.Locator("input[name=name]").FillAsync("stage it");
            await dialog.Locator("input[name=selector]").FillAsync("site=ams1");
            await dialog.Locator("input[name=waves]").FillAsync("1,100%");
            await dialog.Locator("input[name=stageOnly]").CheckAsync();
            await dialog.Locator("input[name=maxConcurrentPullsPerSite]").FillAsync("2");
            await dialog.Locator("input[name=siteMegabytesPerSecond]").FillAsync("20");
            await dialog.Locator("input[name=windowStart]").FillAsync("00:00");
            await dialog.Locator("input[name=windowEnd]").FillAsync("23:59");
            await dialog.Locator("input[name=windowTimeZone]").FillAsync("Europe/Amsterdam");
            await dialog.Locator("#rollout-ok").ClickAsync();
            await Assertions.Expect(dialog).ToBeHiddenAsync();
            await Assertions.Expect(page.Locator("#rollout-page h2")).ToContainTextAsync("stage it");
            await Assertions.Expect(page.Locator("#rollout-page .facts")).ToContainTextAsync("staged only");
            await Assertions.Expect(page.Locator("#rollout-page .facts")).ToContainTextAsync("shared by the site's pulls");
            await Assertions.Expect(page.Locator("#rollout-page .facts")).ToContainTextAsync("every day 00:00–23:59 Europe/Amsterdam");
            await Assertions.Expect(page.Locator("#rollout-page #rollout-state")).ToHaveAttributeAsync("data-state", "succeeded", new() { Timeout = 60_000 });
            await page.ClickAsync("#rollout-page a.back");
            await Assertions.Expect(page.Locator("#rollouts tr[data-rollout]")).ToHaveCountAsync(3);
            Assert.Empty(consoleErrors);

            // A viewer sees the rollout and its page, and no control to change either.
            await page.ClickAsync("#logout");
            await LogInAsync(page, coordinator, "reader");
            await Assertions.Expect(page.Locator("#images tr[data-image='roll.iso']")).ToBeVisibleAsync();
            await Assertions.Expect(page.Locator("#images button:has-text('Roll out')")).ToHaveCountAsync(0);
            await page.Locator("#rollouts tr[data-state='succeeded'] a").First.ClickAsync();
            await Assertions.Expect(page.Locator("#rollout-page #rollout-state")).ToHaveAttributeAsync("data-state", "succeeded");
            await Assertions.Expect(page.Locator("#rollout-page .waves li")).ToHaveCountAsync(2);
            await Assertions.Expect(page.Locator("#rollout-page button")).ToHaveCountAsync(0);
        });
    }

    private static async Task AddUserAsync(CoordinatorInstance coordinator, string name, string role) =>
        (await coordinator.Http.PostAsJsonAsync("api/v1/users", new { name, password = Password, role })).EnsureSuccessStatusCode();

    private static async Task LogInAsync(IPage page, CoordinatorInstance coordinator, string user)
    {
        if (!page.Url.StartsWith(coordinator.BaseUrl.ToString(), StringComparison.Ordinal))
            await page.GotoAsync(coordinator.BaseUrl.ToString());
        await page.Locator("#login-form").WaitForAsync();
        await page.FillAsync("input[name=username]", user);
        await page.FillAsync("input[name=password]", Password);
        await page.ClickAsync("#login-form button[type=submit]");
        await Assertions.Expect(page.Locator("#who")).ToContainTextAsync($"{user} (");
        await Assertions.Expect(page.Locator("#live")).ToHaveTextAsync("live");
    }

    /// <summary>Console errors other than the 401s Chromium logs for the session probe before login.</summary>
    private static List<string> WatchConsole(IPage page)
    {
        var errors = new List<string>();
        page.Console += (_, m) =>
        {
            if (m.Type == "error" && !m.Text.Contains("status of 401", StringComparison.Ordinal) && !m.Text.Contains("status of 400", StringComparison.Ordinal))
                errors.Add(m.Text);
        };
        return errors;
    }

    /// <summary>Simulated agents (real MQTT sessions, own credentials) reporting a site label; returns once all are online.</summary>
    private static async Task<SimulatedFleet> SimulatedFleetAsync(CoordinatorInstance coordinator, int count, Func<int, string> site)
    {
        var key = ECDsa.Create();
        var signing = (await coordinator.Http.GetFromJsonAsync<JsonObject>("api/v1/signing-key"))!;
        key.ImportSubjectPublicKeyInfo(Convert.FromBase64String(signing["publicKey"]!.GetValue<string>()), out _);
        var agents = new List<(string, string, IReadOnlyDictionary<string, string>?)>();
        for (var i = 0; i < count; i++)
        {
            var id = $"sim-{i:D3}";
            agents.Add((id, await coordinator.CreateAgentSecretAsync(id), new Dictionary<string, string> { ["site"] = site(i) }));
        }
        var fleet = new SimulatedFleet(agents, coordinator.BrokerUrl, new TopicNames(coordinator.TopicPrefix), key);
        await fleet.ConnectAsync();
        await Eventually.WaitAsync(async () =>
        {
            var summary = (await coordinator.Http.GetFromJsonAsync<JsonObject>("api/v1/fleet/summary"))!;
            return summary["counts"]!["online"]!.GetValue<long>() >= count && !summary["sites"]!.AsObject().ContainsKey("");
        }, TimeSpan.FromSeconds(60), $"{count} simulated agents online, each with its site");
        return fleet;
    }
}
