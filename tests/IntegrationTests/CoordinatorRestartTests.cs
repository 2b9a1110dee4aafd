using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>A restarted Coordinator knows the fleet and its desired state again, and agents still converge.</summary>
public sealed class CoordinatorRestartTests : IDisposable
{
    private readonly string _work = TestPaths.NewTempDir("restart");

    public void Dispose() => Directory.Delete(_work, true);

    [Fact]
    public async Task Restart_FleetAndDesiredStateBack_AgentsStillConverge()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        await using var agent = new AgentProcess("survivor", await coordinator.CreateAgentSecretAsync("survivor"), coordinator);
        agent.Start();
        var (v1, _) = await TestImages.CreateAsync(_work, "v1.img", 8L * 1024 * 1024, seed: 3);
        var (v2, v2Sha) = await TestImages.CreateAsync(_work, "v2.img", 8L * 1024 * 1024, seed: 4);
        var d1 = (await coordinator.UploadAsync("v1.img", v1))["digest"]!.GetValue<string>();
        var d2 = (await coordinator.UploadAsync("v2.img", v2))["digest"]!.GetValue<string>();
        using (var set = await coordinator.SetDriveAsync("survivor", 0, new { image = "v1.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);
        await coordinator.WaitForAgentAsync("survivor", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == d1, "v1 attached", diagnostics: () => agent.Log);

        await coordinator.RestartAsync();

        // Right after start, before any new message from the agent: the view comes from retained messages and the store.
        var view = await coordinator.GetAgentAsync("survivor");
        Assert.NotNull(view);
        Assert.Equal(1, view!["desired"]!["generation"]!.GetValue<long>());
        Assert.Equal(d1, view["desired"]!["drives"]![0]!["digest"]!.GetValue<string>());
        await coordinator.WaitForAgentAsync("survivor", a => a["online"]!.GetValue<bool>() && CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == d1,
            "known again after restart", TimeSpan.FromSeconds(5));

        using (var set = await coordinator.SetDriveAsync("survivor", 0, new { image = "v2.img", mode = "flash" }))
        {
            Assert.True(set.IsSuccessStatusCode);
            Assert.Contains("\"generation\":2", await set.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
        await coordinator.WaitForAgentAsync("survivor", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == d2 && a["appliedGeneration"]!.GetValue<long>() == 2,
            "v2 attached after restart", diagnostics: () => agent.Log);
        Assert.Equal(v2Sha, TestImages.Sha256Of(agent.Lun("file")));
    }
}
