using System.Text.Json.Nodes;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// Writable drives never lose what the server wrote, and never change the shared, verified cache: a real
/// agent process presents each writable drive's own working copy, keeps it across eject and kill -9,
/// refuses (409 unsaved-writes) to switch the image unless told to discard, and two drives — on two
/// mass_storage functions, as kvmd builds extra drives — never see each other's writes.
/// </summary>
public sealed class WritableDriveTests : IAsyncLifetime
{
    private readonly string _work = TestPaths.NewTempDir("writable");

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        Directory.Delete(_work, true);
        return Task.CompletedTask;
    }

    private static JsonObject? Copy(JsonObject agent, int drive) => CoordinatorInstance.Drive(agent, drive)?["workingCopy"] as JsonObject;

    [Fact]
    public async Task WritableDrive_WritesSurviveEjectAndKill_CacheUnchanged_SecondDriveIsolated_ImageChangeNeedsDiscard()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var agent = new AgentProcess("rw-1", await coordinator.CreateAgentSecretAsync("rw-1"), coordinator, functions: 2);
        await using var _ = agent;
        agent.Start();
        await coordinator.WaitForAgentAsync("rw-1", a => CoordinatorInstance.Drive(a, 1) is not null, "online with two drives", diagnostics: () => agent.Log);
        var agentView = await coordinator.GetAgentAsync("rw-1");
        Assert.Equal("mass_storage.usb1", CoordinatorInstance.Drive(agentView!, 1)!["function"]!.GetValue<string>());

        var (path, sha256) = await TestImages.CreateAsync(_work, "scratch.img", 8L * 1024 * 1024, seed: 7);
        var digest = (await coordinator.UploadAsync("scratch.img", path))["digest"]!.GetValue<string>();
        var (otherPath, _) = await TestImages.CreateAsync(_work, "other.img", 4L * 1024 * 1024, seed: 8);
        await coordinator.UploadAsync("other.img", otherPath);

        foreach (var drive in new[] { 0, 1 })
        {
            using var set = await coordinator.SetDriveAsync("rw-1", drive, new { image = "scratch.img", mode = "flash", readOnly = false });
            Assert.True(set.IsSuccessStatusCode, await set.Content.ReadAsStringAsync());
        }
        await coordinator.WaitForAgentAsync("rw-1", a => Copy(a, 0)?["attached"]?.GetValue<bool>() == true && Copy(a, 1)?["attached"]?.GetValue<bool>() == true
                                                        && a["appliedGeneration"]!.GetValue<long>() == 2, "both drives present their working copies", diagnostics: () => agent.Log);
        var cacheFile = Path.Combine(agent.StorageRoot, "images", digest["sha256:".Length..] + ".img");
        var lun0 = agent.Drive(0, "file");
        Assert.Equal(Path.Combine(agent.StorageRoot, "working", "drive0.img"), lun0);
        Assert.Equal(Path.Combine(agent.StorageRoot, "working", "drive1.img"), agent.Drive(1, "file"));
        Assert.Equal("0", agent.Drive(0, "ro"));
        Assert.Equal(sha256, TestImages.Sha256Of(lun0));

        var written = "the server's filesystem journal"u8.ToArray();
        agent.HostWrites(0, 4096, written);
        await coordinator.WaitForAgentAsync("rw-1", a => Copy(a, 0)?["unsavedWrites"]?.GetValue<bool>() == true, "drive 0 reports unsaved writes", diagnostics: () => agent.Log);
        var withWrites = TestImages.Sha256Of(lun0);
        Assert.NotEqual(sha256, withWrites);

        // Eject (no image): the copy stays. Then kill -9 and start again.
        using (var eject = await coordinator.SetDriveAsync("rw-1", 0, new { image = (string?)null }))
            Assert.True(eject.IsSuccessStatusCode, await eject.Content.ReadAsStringAsync());
        await coordinator.WaitForAgentAsync("rw-1", a => CoordinatorInstance.Drive(a, 0)?["connected"]?.GetValue<bool>() == false && Copy(a, 0) is not null,
            "drive 0 ejected, copy kept", diagnostics: () => agent.Log);
        await agent.KillAsync();
        agent.Start();
        using (var again = await coordinator.SetDriveAsync("rw-1", 0, new { image = "scratch.img", mode = "flash", readOnly = false }))
            Assert.True(again.IsSuccessStatusCode, await again.Content.ReadAsStringAsync());
        await coordinator.WaitForAgentAsync("rw-1", a => Copy(a, 0)?["attached"]?.GetValue<bool>() == true && a["appliedGeneration"]!.GetValue<long>() == 4,
            "drive 0 re-attached after the restart", diagnostics: () => agent.Log);
        Assert.Equal(withWrites, TestImages.Sha256Of(agent.Drive(0, "file")));
        Assert.Equal(sha256, TestImages.Sha256Of(cacheFile)); // the shared, verified image never saw the writes
        Assert.Equal(sha256, TestImages.Sha256Of(agent.Drive(1, "file"))); // nor did the other drive

        // Another image, or read-only, would drop the copy: refused unless the request discards.
        foreach (var body in new object[] { new { image = "other.img", mode = "flash", readOnly = false }, new { image = "scratch.img", mode = "flash", readOnly = true } })
        {
            using var refused = await coordinator.SetDriveAsync("rw-1", 0, body);
            Assert.Equal(System.Net.HttpStatusCode.Conflict, refused.StatusCode);
            var problem = await refused.Content.ReadAsStringAsync();
            Assert.Contains("unsaved-writes", problem, StringComparison.Ordinal);
        }
        var unchanged = await coordinator.GetAgentAsync("rw-1");
        Assert.Equal(4, unchanged!["desired"]!["generation"]!.GetValue<long>());
        Assert.Equal(withWrites, TestImages.Sha256Of(agent.Drive(0, "file")));

        using (var discard = await coordinator.SetDriveAsync("rw-1", 0, new { image = "other.img", mode = "flash", readOnly = false, discardWrites = true }))
            Assert.True(discard.IsSuccessStatusCode, await discard.Content.ReadAsStringAsync());
        var otherDigest = (await coordinator.GetAgentAsync("rw-1"))!["desired"]!["drives"]!.AsArray().First(d => d!["index"]!.GetValue<int>() == 0)!["digest"]!.GetValue<string>();
        await coordinator.WaitForAgentAsync("rw-1", a => Copy(a, 0)?["baseDigest"]?.GetValue<string>() == otherDigest && Copy(a, 0)?["attached"]?.GetValue<bool>() == true
                                                        && a["appliedGeneration"]!.GetValue<long>() == 5, "drive 0 discarded its writes and presents the new image", diagnostics: () => agent.Log);
        Assert.Equal(TestImages.Sha256Of(otherPath), TestImages.Sha256Of(agent.Drive(0, "file")));
        Assert.Equal(sha256, TestImages.Sha256Of(agent.Drive(1, "file")));
    }

    [Fact]
    public async Task KillDuringWorkingCopy_RestartConverges_NothingHalfMadeAttached()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var agent = new AgentProcess("rw-2", await coordinator.CreateAgentSecretAsync("rw-2"), coordinator);
        await using var _ = agent;
        agent.Start();
        await coordinator.WaitForAgentAsync("rw-2", a => a["online"]!.GetValue<bool>() && a["drives"] is not null, "online", diagnostics: () => agent.Log);
        var (path, sha256) = await TestImages.CreateAsync(_work, "big.img", 768L * 1024 * 1024, seed: 9);
        await coordinator.UploadAsync("big.img", path);
        // Pull first (read-only), so the kill lands in the copy, not in the pull.
        using (var ro = await coordinator.SetDriveAsync("rw-2", 0, new { image = "big.img", mode = "flash", readOnly = true }))
            Assert.True(ro.IsSuccessStatusCode);
        await coordinator.WaitForAgentAsync("rw-2", a => a["appliedGeneration"]!.GetValue<long>() == 1, "pulled and attached read-only", TimeSpan.FromMinutes(3), () => agent.Log);
        Assert.Null(Copy((await coordinator.GetAgentAsync("rw-2"))!, 0));

        // Signalled by inotify the moment the copy starts (a poll could miss a short copy).
        var temp = Path.Combine(agent.StorageRoot, "working", "drive0.tmp");
        var started = new TaskCompletionSource();
        using var watcher = new FileSystemWatcher(Path.GetDirectoryName(temp)!, "drive0.tmp") { EnableRaisingEvents = true };
        watcher.Created += (_, _) => started.TrySetResult();
        using (var rw = await coordinator.SetDriveAsync("rw-2", 0, new { image = "big.img", mode = "flash", readOnly = false }))
            Assert.True(rw.IsSuccessStatusCode);
        try
        {
            await started.Task.WaitAsync(TimeSpan.FromSeconds(60));
        }
        catch (TimeoutException)
        {
            Assert.Fail("the working copy was never started as drive0.tmp:\n" + agent.Log);
        }
        await agent.KillAsync();
        Assert.NotEqual(Path.Combine(agent.StorageRoot, "working", "drive0.img"), agent.Drive(0, "file")); // nothing half-made attached

        agent.Start();
        await coordinator.WaitForAgentAsync("rw-2", a => Copy(a, 0)?["attached"]?.GetValue<bool>() == true && a["appliedGeneration"]!.GetValue<long>() == 2,
            "the copy was made again and attached", TimeSpan.FromMinutes(3), () => agent.Log);
        Assert.False(File.Exists(temp));
        Assert.Equal(sha256, TestImages.Sha256Of(agent.Drive(0, "file")));
        Assert.Equal("0", agent.Drive(0, "ro"));

        // A service stop (SIGTERM, as systemd sends) ends cleanly: background steps stopped, nothing thrown on the way out.
        await agent.StopGracefullyAsync();
        Assert.True(agent.ExitCode == 0, $"exit code {agent.ExitCode}:\n{agent.Log}");
    }
}
