using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using MsdFleet.Coordinator.Messaging;
using MsdFleet.FleetBench;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// The fleet benchmark's host (bench/FleetBench) still runs end to end, with 20 simulated agents on the embedded
/// broker: enroll, raw round trip, rollout, idle sampling, and a two-step ramp. Nothing is timed — bench/fleet.sh is
/// where the figures come from; this only keeps the host from rotting between benchmark runs.
/// </summary>
public sealed class FleetBenchSmokeTests : IAsyncLifetime
{
    private readonly string _work = TestPaths.NewTempDir("fleetbench");

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        Directory.Delete(_work, true);
        return Task.CompletedTask;
    }

    [Fact]
    public async Task RunAndRamp_With20Agents_EveryAgentAttached_NoConnectFailed()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var results = Path.Combine(_work, "results.txt");
        var agents = Path.Combine(_work, "agents.txt");
        using (var api = new CoordinatorApi(coordinator.BaseUrl, CoordinatorInstance.AdminToken))
            await Enrollment.WriteAsync(agents, await Enrollment.EnrollAsync(api, "bench", 0, 20, "fleet", CancellationToken.None));
        string[] common =
        [
            "--coordinator", coordinator.BaseUrl.ToString(), "--admin-token", CoordinatorInstance.AdminToken, "--topic-prefix", coordinator.TopicPrefix,
            "--broker", coordinator.BrokerUrl.ToString(), "--coordinator-pid", Environment.ProcessId.ToString(CultureInfo.InvariantCulture), "--results", results,
        ];
        // The embedded broker's own Coordinator user is the one allowed to write desired-state topics (the raw probe does).
        var broker = coordinator.Services.GetRequiredService<EmbeddedBrokerService>();
        Assert.Equal(0, await FleetRun.RunAsync(new Arguments([.. common, "--agents", agents, "--broker-user", EmbeddedBrokerService.CoordinatorUser,
            "--broker-password", broker.CoordinatorPassword, "--idle-seconds", "1", "--rollout-timeout", "20"]), CancellationToken.None));
        Assert.Equal(0, await BrokerRamp.RunAsync(new Arguments([.. common, "--steps", "20,40", "--sample-seconds", "1"]), CancellationToken.None));

        var lines = await File.ReadAllLinesAsync(results);
        var fleet = lines.Single(l => l.StartsWith("fleet ", StringComparison.Ordinal)).Split(' ');
        Assert.Equal("20", fleet[1]);
        Assert.Equal("20", fleet[11]); // every agent reported the image attached
        Assert.NotEqual("-", fleet[12]); // and the Coordinator said the rollout succeeded
        Assert.Contains(lines, l => l.StartsWith("ramp 40 0 ", StringComparison.Ordinal)); // 40 connected, none failed
        Assert.Contains("limit 40 none_reached", lines);
    }
}
