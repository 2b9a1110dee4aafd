using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// The built msdctl against a running Coordinator over TLS: login with a password (a personal token is
/// minted and stored 0600), push, interrupt, push again (only the rest is sent), mount and eject on a
/// running agent with --wait, save a writable drive with drive snapshot, pull with verification, --json
/// parsed, exit codes for scripts.
/// </summary>
public sealed class CliTests : IAsyncLifetime
{
    private readonly string _work = TestPaths.NewTempDir("cli");

    private string ConfigPath => Path.Combine(_work, "msdctl.json");

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        Directory.Delete(_work, true);
        return Task.CompletedTask;
    }

    [Fact]
    public async Task Login_Push_Interrupt_PushAgain_Mount_Eject_Pull()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync(tls: true);
        (await coordinator.Http.PostAsJsonAsync("api/v1/users", new { name = "ops", password = "ops password 1234", role = "admin" })).EnsureSuccessStatusCode();

        var login = await RunAsync(["login", "--server", coordinator.BaseUrl.ToString(), "--user", "ops", "--ca", coordinator.CaPath, "--json"],
            new() { ["MSDCTL_PASSWORD"] = "ops password 1234" });
        Assert.True(login.Code == 0, login.ToString());
        Assert.Equal("admin", JsonNode.Parse(login.Output)!["role"]!.GetValue<string>());
        Assert.Equal("ops", JsonNode.Parse(login.Output)!["user"]!.GetValue<string>()); // the personal token acts as its user
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(ConfigPath));

        // Push at 4 MiB/s, killed once some batches are in; the second push sends only the rest.
        var (path, sha256) = await TestImages.CreateAsync(_work, "cli.img", 40L * 1024 * 1024 + 999, seed: 31);
        using (var first = Start(["image", "push", path, "--limit-rate", "4M", "--json"]))
        {
            var store = Path.Combine(coordinator.DataDir, "store");
            await Eventually.WaitAsync(() => StoredBytes(store) > 16L * 1024 * 1024, TimeSpan.FromSeconds(60), "the first push stored 16 MiB");
            first.Kill(entireProcessTree: true);
            await first.WaitForExitAsync();
        }
        var again = await RunAsync(["image", "push", path, "--json"]);
        Assert.True(again.Code == 0, again.ToString());
        var pushed = JsonNode.Parse(again.Output)!;
        var size = new FileInfo(path).Length;
        var alreadyStored = pushed["alreadyStoredBytes"]!.GetValue<long>();
        var sent = pushed["sentBytes"]!.GetValue<long>();
        // The store held > 16 MiB (packs and their indexes) when the first push died: at least one whole
        // ~16 MiB batch of chunks had landed, and the rerun did not send it again.
        Assert.True(alreadyStored >= 8L * 1024 * 1024, $"already stored {alreadyStored}");
        Assert.Equal(size, alreadyStored + sent);
        Assert.Equal(sha256, pushed["sha256"]!.GetValue<string>());
        var list = await RunAsync(["image", "ls", "--json"]);
        Assert.Contains(JsonNode.Parse(list.Output)!.AsArray(), i => i!["name"]!.GetValue<string>() == "cli.img");

        await using var agent = new AgentProcess("cli-agent", await coordinator.CreateAgentSecretAsync("cli-agent"), coordinator);
        agent.SetEnvironment("Agent__CaCertificatePath", coordinator.CaPath);
        agent.Start();
        await coordinator.WaitForAgentAsync("cli-agent", a => a["online"]!.GetValue<bool>() && a["drives"] is not null, "online", diagnostics: () => agent.Log);
        // watch --json follows the live events while the mount happens.
        using var watch = Start(["watch", "--json"]);
        var watched = new System.Collections.Concurrent.ConcurrentQueue<JsonNode>();
        watch.OutputDataReceived += (_, e) =>
        {
            if (!string.IsNullOrWhiteSpace(e.Data))
                watched.Enqueue(JsonNode.Parse(e.Data)!);
        };
        watch.BeginOutputReadLine();
        var hub = (MsdFleet.Coordinator.Web.EventHub)coordinator.Services.GetService(typeof(MsdFleet.Coordinator.Web.EventHub))!;
        await Eventually.WaitAsync(() => hub.SubscriberCount == 1, TimeSpan.FromSeconds(30), "msdctl watch to subscribe");
        var mount = await RunAsync(["mount", "cli-agent", "cli.img", "--flash", "--wait", "--timeout", "120", "--json"]);
        Assert.True(mount.Code == 0, mount + agent.Log);
        Assert.True(JsonNode.Parse(mount.Output)!["applied"]!.GetValue<bool>());
        Assert.Equal(sha256, TestImages.Sha256Of(agent.Lun("file")));
        await Eventually.WaitAsync(() => watched.Any(e => e["type"]!.GetValue<string>() == "agent"
            && e["data"]!["drives"]?.AsArray().Any(d => d!["connected"]!.GetValue<bool>()) == true), TimeSpan.FromSeconds(20), "watch shows the drive connected");
        var sequences = watched.Select(e => e["sequence"]!.GetValue<long>()).ToList();
        Assert.Equal(sequences.Order().ToList(), sequences);
        Assert.Equal(sequences.Count, sequences.Distinct().Count());
        watch.Kill();
        var eject = await RunAsync(["eject", "cli-agent", "--wait", "--json"]);
        Assert.True(eject.Code == 0, eject.ToString());
        Assert.Equal(string.Empty, agent.Lun("file"));

        // A writable drive: the server writes, `drive snapshot` saves it as a new image; a taken name is a conflict (5).
        var rw = await RunAsync(["mount", "cli-agent", "cli.img", "--flash", "--rw", "--wait", "--timeout", "120", "--json"]);
        Assert.True(rw.Code == 0, rw + agent.Log);
        agent.HostWrites(0, 1024 * 1024, "written by the server through the gadget"u8.ToArray());
        await coordinator.WaitForAgentAsync("cli-agent", a => CoordinatorInstance.Drive(a, 0)?["workingCopy"]?["unsavedWrites"]?.GetValue<bool>() == true,
            "unsaved writes reported", diagnostics: () => agent.Log);
        var copySha = TestImages.Sha256Of(agent.Lun("file"));
        var snapshot = await RunAsync(["drive", "snapshot", "cli-agent", "cli-saved.img", "--json"]);
        Assert.True(snapshot.Code == 0, snapshot + agent.Log);
        var saved = JsonNode.Parse(snapshot.Output)!;
        Assert.InRange(saved["bytesSent"]!.GetValue<long>(), 1, 1024 * 1024); // one chunk changed, not the 40 MiB image
        var savedImage = JsonNode.Parse((await RunAsync(["image", "ls", "--json"])).Output)!.AsArray().First(i => i!["name"]!.GetValue<string>() == "cli-saved.img")!;
        Assert.Equal(copySha, savedImage["sha256"]!.GetValue<string>());
        var taken = await RunAsync(["drive", "snapshot", "cli-agent", "cli-saved.img", "--json"]);
        Assert.Equal(5, taken.Code);
        var ejectRw = await RunAsync(["eject", "cli-agent", "--wait", "--json"]);
        Assert.True(ejectRw.Code == 0, ejectRw.ToString());

        var show = await RunAsync(["agent", "show", "cli-agent", "--json"]);
        Assert.Equal("cli-agent", JsonNode.Parse(show.Output)!["id"]!.GetValue<string>());

        // Pull: a partial file is resumed, the result verified.
        var target = Path.Combine(_work, "pulled.img");
        await File.WriteAllBytesAsync(target + ".part", (await File.ReadAllBytesAsync(path))[..(5 * 1024 * 1024)]);
        var pull = await RunAsync(["image", "pull", "cli.img", "-o", target, "--json"]);
        Assert.True(pull.Code == 0, pull.ToString());
        Assert.Equal(5L * 1024 * 1024, JsonNode.Parse(pull.Output)!["resumedFrom"]!.GetValue<long>());
        Assert.Equal(sha256, TestImages.Sha256Of(target));

        // Exit codes and errors a script can act on.
        var missing = await RunAsync(["mount", "cli-agent", "no-such.img", "--cdrom", "--json"]);
        Assert.Equal(4, missing.Code);
        Assert.Equal("image-not-found", JsonNode.Parse(missing.Output)!["code"]!.GetValue<string>());
        var badToken = await RunAsync(["image", "ls", "--json"], new() { ["MSDCTL_TOKEN"] = "msdf_not-a-token" });
        Assert.Equal(3, badToken.Code);
        var usage = await RunAsync(["mount", "cli-agent", "cli.img", "--cdrom", "--rw"]);
        Assert.Equal(2, usage.Code);
        var noConfirm = await RunAsync(["image", "rm", "cli.img"]);
        Assert.Equal(2, noConfirm.Code);
        var rm = await RunAsync(["image", "rm", "cli.img", "--yes", "--json"]);
        Assert.True(rm.Code == 0, rm.ToString());
    }

    [Fact]
    public async Task AgentLabel_SetsAndRemovesCentralLabels_AgentLsSelects_BadSelectorIsAUsageError()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        await coordinator.CreateAgentSecretAsync("rack1-07");
        await coordinator.CreateAgentSecretAsync("rack2-01");
        var env = new Dictionary<string, string> { ["MSDCTL_SERVER"] = coordinator.BaseUrl.ToString(), ["MSDCTL_TOKEN"] = CoordinatorInstance.AdminToken };

        var set = await RunAsync(["agent", "label", "rack1-07", "site=ams1", "rack=r1", "--json"], env);
        Assert.True(set.Code == 0, set.ToString());
        Assert.Equal("ams1", JsonNode.Parse(set.Output)!["site"]!.GetValue<string>());
        Assert.True((await RunAsync(["agent", "label", "rack2-01", "site=fra2"], env)).Code == 0);
        var removed = await RunAsync(["agent", "label", "rack1-07", "rack-", "--json"], env);
        Assert.Equal("""{"site":"ams1"}""", JsonNode.Parse(removed.Output)!["centralLabels"]!.ToJsonString());

        var ams = await RunAsync(["agent", "ls", "-l", "site in (ams1),!maintenance", "--json"], env);
        Assert.True(ams.Code == 0, ams.ToString());
        Assert.Equal(["rack1-07"], JsonNode.Parse(ams.Output)!.AsArray().Select(a => a!["id"]!.GetValue<string>()));
        var table = await RunAsync(["agent", "ls", "-l", "site=fra2"], env);
        Assert.Contains("rack2-01", table.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("rack1-07", table.Output, StringComparison.Ordinal);

        var offline = await RunAsync(["agent", "ls", "--state", "offline", "-q", "RACK2", "--json"], env);
        Assert.Equal(["rack2-01"], JsonNode.Parse(offline.Output)!.AsArray().Select(a => a!["id"]!.GetValue<string>()));
        var unknownState = await RunAsync(["agent", "ls", "--state", "asleep", "--json"], env);
        Assert.NotEqual(0, unknownState.Code);
        Assert.Contains("invalid-state", unknownState.Output + unknownState.Error, StringComparison.Ordinal);

        var bad = await RunAsync(["agent", "ls", "-l", "site in ams1"], env);
        Assert.Equal(2, bad.Code);
        Assert.Contains("expected '(' to open the value list", bad.Output + bad.Error, StringComparison.Ordinal);
        var badLabel = await RunAsync(["agent", "label", "rack1-07", "site=ams 1"], env);
        Assert.Equal(2, badLabel.Code);
    }

    [Fact]
    public async Task Rollout_CreateWatchToTheEnd_ListShow_PauseResumeCancel_WrongStateIsAnError()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var env = new Dictionary<string, string> { ["MSDCTL_SERVER"] = coordinator.BaseUrl.ToString(), ["MSDCTL_TOKEN"] = CoordinatorInstance.AdminToken };
        var image = new byte[200_000];
        new Random(77).NextBytes(image);
        var digest = (await (await coordinator.Http.PutAsync("api/v1/images/cli-roll.iso", new ByteArrayContent(image))).Content.ReadFromJsonAsync<JsonObject>())!["digest"]!.GetValue<string>();
        var key = System.Security.Cryptography.ECDsa.Create();
        key.ImportSubjectPublicKeyInfo(Convert.FromBase64String((await coordinator.Http.GetFromJsonAsync<JsonObject>("api/v1/signing-key"))!["publicKey"]!.GetValue<string>()), out _);
        var agents = new List<(string, string, IReadOnlyDictionary<string, string>?)>();
        foreach (var id in new[] { "cli-r1", "cli-r2", "cli-r3" })
        {
            agents.Add((id, await coordinator.CreateAgentSecretAsync(id), null));
            Assert.True((await RunAsync(["agent", "label", id, "site=cli"], env)).Code == 0);
        }
        await using var fleet = new MsdFleet.FleetSimulator.SimulatedFleet(agents, coordinator.BrokerUrl, new MsdFleet.Protocol.Naming.TopicNames(coordinator.TopicPrefix), key);
        await fleet.ConnectAsync();
        foreach (var agent in fleet.Agents)
            agent.Cache(digest);
        await Eventually.WaitAsync(async () => (await coordinator.Http.GetFromJsonAsync<JsonObject>("api/v1/fleet/summary"))!["counts"]!["online"]!.GetValue<long>() == 3,
            TimeSpan.FromSeconds(30), "three simulated agents online");

        var watched = await RunAsync(["rollout", "create", "cli install", "cli-roll.iso", "-l", "site=cli", "--cdrom", "--waves", "1,100%", "--watch", "--json"], env);
        Assert.True(watched.Code == 0, watched.ToString());
        var done = JsonNode.Parse(watched.Output)!;
        Assert.Equal("succeeded", done["state"]!.GetValue<string>());
        Assert.Equal(3, done["counts"]!["succeeded"]!.GetValue<int>());
        var id1 = done["id"]!.GetValue<string>();
        var list = await RunAsync(["rollout", "ls", "--json"], env);
        Assert.Equal("cli install", JsonNode.Parse(list.Output)!.AsArray().Single()!["name"]!.GetValue<string>());
        Assert.True((await RunAsync(["rollout", "ls"], env)).Code == 0);
        var show = await RunAsync(["rollout", "show", id1], env);
        Assert.Contains("wave", show.Output, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(5, (await RunAsync(["rollout", "pause", id1, "--json"], env)).Code); // succeeded: nothing to pause (409)

        fleet.Agents[0].Vanish(); // the next one waits for it
        var started = await RunAsync(["rollout", "create", "second", "cli-roll.iso", "-l", "site=cli", "--flash", "--json"], env);
        var id2 = JsonNode.Parse(started.Output)!["id"]!.GetValue<string>();
        Assert.Equal("paused", JsonNode.Parse((await RunAsync(["rollout", "pause", id2, "--json"], env)).Output)!["state"]!.GetValue<string>());
        Assert.Equal("running", JsonNode.Parse((await RunAsync(["rollout", "resume", id2, "--json"], env)).Output)!["state"]!.GetValue<string>());
        Assert.Equal(2, (await RunAsync(["rollout", "pause", id2, "--revert"], env)).Code);
        var cancelled = await RunAsync(["rollout", "cancel", id2, "--revert", "--json"], env);
        Assert.True(cancelled.Code == 0, cancelled.ToString());
        var usage = await RunAsync(["rollout", "create", "x", "cli-roll.iso", "-l", "site in cli", "--cdrom"], env);
        Assert.Equal(2, usage.Code);
    }

    private static long StoredBytes(string folder) =>
        Directory.Exists(folder) ? Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length) : 0;

    private Process Start(IEnumerable<string> args, Dictionary<string, string>? environment = null)
    {
        var info = new ProcessStartInfo("dotnet", [TestPaths.CliDll, .. args, "--config", ConfigPath])
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        info.Environment["MSDCTL_CONFIG"] = ConfigPath;
        foreach (var (k, v) in environment ?? [])
            info.Environment[k] = v;
        return Process.Start(info)!;
    }

    private async Task<CliResult> RunAsync(IEnumerable<string> args, Dictionary<string, string>? environment = null)
    {
        using var process = Start(args, environment);
        process.StandardInput.Close();
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        await process.WaitForExitAsync(timeout.Token);
        return new CliResult(process.ExitCode, await output, await error);
    }

    private sealed record CliResult(int Code, string Output, string Error)
    {
        public override string ToString() => $"exit {Code}\nstdout: {Output}\nstderr: {Error}";
    }
}
