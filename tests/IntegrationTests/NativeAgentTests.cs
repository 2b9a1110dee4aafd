using MsdFleet.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// The agent as shipped — NativeAOT, one executable, no JIT and no reflection-emitted serializers — does
/// the whole job: signed desired state over MQTT (MessagePack through the written-out formatters),
/// options validated by the generated validators, a verified pull, a delta pull seeded from the first
/// image, attach, eject, a report the Coordinator decodes, and a clean SIGTERM stop.
/// </summary>
public sealed class NativeAgentTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly string _work = TestPaths.NewTempDir("native");

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        Directory.Delete(_work, true);
        return Task.CompletedTask;
    }

    [Fact]
    public async Task NativeAotAgent_PullsDeltaPullsAttachesEjectsAndStopsCleanly()
    {
        var publish = Path.Combine(TestPaths.RepoRoot, "artifacts", "test-agent", "linux-x64");
        var (exitCode, text) = await RepoScript.RunAsync("publish-native-agent.sh", TimeSpan.FromMinutes(15), "linux-x64", publish);
        Assert.True(exitCode == 0, "publishing the NativeAOT agent failed:\n" + text);
        var executable = Path.Combine(publish, "msdfleet-agent");
        Assert.False(File.Exists(Path.Combine(publish, "msdfleet-agent.dll")), "the published agent is not a single native executable");

        await using var coordinator = await CoordinatorInstance.StartAsync();
        await using var agent = new AgentProcess("native-1", await coordinator.CreateAgentSecretAsync("native-1"), coordinator) { Executable = executable };
        agent.Start();
        await coordinator.WaitForAgentAsync("native-1", a => a["online"]!.GetValue<bool>() && a["drives"] is not null, "online with a report", diagnostics: () => agent.Log);

        var (v1, v1Sha) = await TestImages.CreateAsync(_work, "v1.img", 24L * 1024 * 1024 + 4321, seed: 11);
        var d1 = (await coordinator.UploadAsync("v1.img", v1))["digest"]!.GetValue<string>();
        using (var set = await coordinator.SetDriveAsync("native-1", 0, new { image = "v1.img", mode = "cdrom" }))
            Assert.True(set.IsSuccessStatusCode, await set.Content.ReadAsStringAsync());
        await coordinator.WaitForAgentAsync("native-1", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == d1, "v1 attached", diagnostics: () => agent.Log);
        Assert.Equal(v1Sha, TestImages.Sha256Of(agent.Lun("file")));
        Assert.Equal("1", agent.Lun("cdrom"));

        // v2 = v1 with 1 MiB changed in the middle: only about that much may cross the wire.
        var v2 = Path.Combine(_work, "v2.img");
        File.Copy(v1, v2);
        using (var stream = new FileStream(v2, FileMode.Open, FileAccess.Write))
        {
            stream.Position = 12L * 1024 * 1024;
            stream.Write(new Random(5).GetItems<byte>(Enumerable.Range(0, 256).Select(i => (byte)i).ToArray(), 1024 * 1024));
        }
        var v2Sha = TestImages.Sha256Of(v2);
        var d2 = (await coordinator.UploadAsync("v2.img", v2))["digest"]!.GetValue<string>();
        var servedBefore = coordinator.Counters.ContentBytesServed;
        using (var set = await coordinator.SetDriveAsync("native-1", 0, new { image = "v2.img", mode = "flash", readOnly = true }))
            Assert.True(set.IsSuccessStatusCode, await set.Content.ReadAsStringAsync());
        await coordinator.WaitForAgentAsync("native-1", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == d2, "v2 attached", diagnostics: () => agent.Log);
        Assert.Equal(v2Sha, TestImages.Sha256Of(agent.Lun("file")));
        var deltaServed = coordinator.Counters.ContentBytesServed - servedBefore;
        Assert.InRange(deltaServed, 1, 3L * 1024 * 1024);

        using (var eject = await coordinator.SetDriveAsync("native-1", 0, new { image = (string?)null }))
            Assert.True(eject.IsSuccessStatusCode, await eject.Content.ReadAsStringAsync());
        await coordinator.WaitForAgentAsync("native-1", a => CoordinatorInstance.Drive(a, 0) is { } d && d["image"] is null, "ejected", diagnostics: () => agent.Log);
        Assert.Equal("", agent.Lun("file"));

        var status = await File.ReadAllLinesAsync($"/proc/{agent.ProcessId}/status");
        output.WriteLine($"native agent: {deltaServed} bytes served for the 1 MiB delta; {status.First(l => l.StartsWith("VmRSS", StringComparison.Ordinal))}");
        await agent.StopGracefullyAsync();
        Assert.True(agent.ExitCode == 0, "the native agent did not stop cleanly on SIGTERM:\n" + agent.Log);
        Assert.DoesNotContain("Unhandled exception", agent.Log, StringComparison.Ordinal);
        Assert.DoesNotContain("PlatformNotSupported", agent.Log, StringComparison.OrdinalIgnoreCase);
    }
}
