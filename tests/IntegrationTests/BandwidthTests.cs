using System.Diagnostics;
using System.Net.Http.Json;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>The pull bandwidth cap set per agent through desired state overrides the agent's own setting.</summary>
public sealed class BandwidthTests : IDisposable
{
    private readonly string _work = TestPaths.NewTempDir("bandwidth");

    public void Dispose() => Directory.Delete(_work, true);

    [Fact]
    public async Task DesiredStateCap_LimitsThePull()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        await using var agent = new AgentProcess("capped", await coordinator.CreateAgentSecretAsync("capped"), coordinator);
        agent.Start();
        using (var cap = await coordinator.Http.PutAsJsonAsync("api/v1/agents/capped/bandwidth", new { maxBytesPerSecond = 4 * 1024 * 1024 }))
            Assert.Contains("\"maxBytesPerSecond\":4194304", await cap.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        using (var bad = await coordinator.Http.PutAsJsonAsync("api/v1/agents/capped/bandwidth", new { maxBytesPerSecond = -1 }))
            Assert.Equal(System.Net.HttpStatusCode.BadRequest, bad.StatusCode);
        var (path, _) = await TestImages.CreateAsync(_work, "slow.img", 12L * 1024 * 1024, seed: 3);
        var digest = (await coordinator.UploadAsync("slow.img", path))["digest"]!.GetValue<string>();
        await coordinator.WaitForAgentAsync("capped", a => a["online"]!.GetValue<bool>(), "online", diagnostics: () => agent.Log);
        var clock = Stopwatch.StartNew();
        using (var set = await coordinator.SetDriveAsync("capped", 0, new { image = "slow.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);
        var attached = await coordinator.WaitForAgentAsync("capped", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == digest,
            "attached", diagnostics: () => agent.Log);
        // 12 MiB at 4 MiB/s cannot take less than ~2.9 s (3 s minus the 100 ms burst allowance).
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(2.8), $"the capped pull took only {clock.Elapsed.TotalSeconds:F1} s");
        Assert.Equal(2, attached["appliedGeneration"]!.GetValue<long>());
    }
}
