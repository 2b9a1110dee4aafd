using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// Fleet provisioning: one token enrolls up to N devices, each with its own id (checked against the id
/// rules and the token's pattern), each given the token's labels, each with its own secret; the N+1st is
/// refused, concurrent devices never exceed N, an id that exists is never taken over; revocable; audited.
/// </summary>
public sealed class FleetProvisioningTests : IAsyncLifetime
{
    private readonly string _work = TestPaths.NewTempDir("provisioning");

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        Directory.Delete(_work, true);
        return Task.CompletedTask;
    }

    [Fact]
    public async Task ATokenForThreeDevices_EnrollsThree_RefusesTheFourth_LabelsApplied_AndTheDevicesRun()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        await coordinator.CreateAgentSecretAsync("ams1-r1-99"); // exists already
        using var create = await coordinator.Http.PostAsJsonAsync("api/v1/enrollments",
            new { maxDevices = 3, agentIdPattern = "ams1-r?-*", labels = new Dictionary<string, string> { ["site"] = "ams1", ["batch"] = "2026-12" } });
        Assert.True(create.StatusCode == HttpStatusCode.Created, await create.Content.ReadAsStringAsync());
        var token = (await create.Content.ReadFromJsonAsync<JsonObject>())!;
        var secret = token["token"]!.GetValue<string>();
        Assert.Contains("--id $(hostname)", token["command"]!.GetValue<string>(), StringComparison.Ordinal);

        async Task<(int Code, string Error, string Config)> EnrollAsync(string? id)
        {
            var config = Path.Combine(_work, id ?? "noid-" + Guid.NewGuid().ToString("N")[..6], "agent.json");
            string[] args = ["enroll", "--coordinator", coordinator.BaseUrl.ToString(), "--token", secret, "--config", config, .. id is null ? Array.Empty<string>() : ["--id", id]];
            var (code, _, error) = await AgentProcess.RunCommandAsync(args);
            return (code, error, config);
        }
        // Refused without spending a device: an id outside the pattern, an invalid id, an id that exists.
        var outside = await EnrollAsync("fra2-r1-01");
        Assert.True(outside.Code == 3, outside.Error);
        Assert.Contains("matching 'ams1-r?-*'", outside.Error, StringComparison.Ordinal);
        Assert.False(File.Exists(outside.Config));
        var taken = await EnrollAsync("ams1-r1-99");
        Assert.True(taken.Code == 3, taken.Error);
        Assert.Contains("never replaces an agent", taken.Error, StringComparison.Ordinal);
        var invalid = await AgentProcess.RunCommandAsync(["enroll", "--coordinator", coordinator.BaseUrl.ToString(), "--token", secret, "--id", "-bad"]);
        Assert.Equal(2, invalid.ExitCode);

        // Five devices at once for three places: exactly three get in.
        var ids = new[] { "ams1-r1-01", "ams1-r1-02", "ams1-r2-01", "ams1-r2-02", "ams1-r3-01" };
        var results = await Task.WhenAll(ids.Select(EnrollAsync));
        Assert.Equal(3, results.Count(r => r.Code == 0));
        Assert.All(results.Where(r => r.Code != 0), r => Assert.Contains("enrolled all 3 of its devices", r.Error, StringComparison.Ordinal));
        var enrolled = ids.Where((_, i) => results[i].Code == 0).ToList();
        var listed = (await coordinator.Http.GetFromJsonAsync<JsonArray>("api/v1/enrollments"))!.Single(e => e!["id"]!.GetValue<string>() == token["id"]!.GetValue<string>())!;
        Assert.Equal(3, listed["used"]!.GetValue<long>());

        // Each has its own secret and the token's labels; each runs from its file.
        var secrets = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (id, i) in enrolled.Select((id, i) => (id, i)))
        {
            var written = JsonNode.Parse(await File.ReadAllTextAsync(results[Array.IndexOf(ids, id)].Config))!;
            Assert.Equal(id, written["Agent"]!["Id"]!.GetValue<string>());
            Assert.True(secrets.Add(written["Agent"]!["Secret"]!.GetValue<string>()));
            var view = (await coordinator.GetAgentAsync(id))!;
            Assert.Equal("""{"batch":"2026-12","site":"ams1"}""", view["centralLabels"]!.ToJsonString());
        }
        await using (var device = new AgentProcess(enrolled[0], "unused", coordinator))
        {
            device.UseConfigFile(results[Array.IndexOf(ids, enrolled[0])].Config);
            device.Start();
            await coordinator.WaitForAgentAsync(enrolled[0], a => a["online"]!.GetValue<bool>(), "the enrolled device online", diagnostics: () => device.Log);
        }
        Assert.Equal(3, (await coordinator.Http.GetFromJsonAsync<JsonArray>("api/v1/agents?selector=batch%3D2026-12"))!.Count);

        // Audited: the token and each enrollment.
        var audit = (await coordinator.Http.GetFromJsonAsync<JsonArray>("api/v1/audit?action=agent.enroll"))!;
        Assert.Equal(enrolled.Order(StringComparer.Ordinal), audit.Select(e => e!["target"]!.GetValue<string>()).Order(StringComparer.Ordinal));

        // Revoked: a fresh token for more devices stops working at once.
        using var more = await coordinator.Http.PostAsJsonAsync("api/v1/enrollments", new { maxDevices = 10 });
        var moreToken = (await more.Content.ReadFromJsonAsync<JsonObject>())!;
        (await coordinator.Http.DeleteAsync($"api/v1/enrollments/{moreToken["id"]!.GetValue<string>()}")).EnsureSuccessStatusCode();
        var revoked = await AgentProcess.RunCommandAsync(["enroll", "--coordinator", coordinator.BaseUrl.ToString(), "--token", moreToken["token"]!.GetValue<string>(),
            "--id", "late-01", "--config", Path.Combine(_work, "late", "agent.json")]);
        Assert.Equal(3, revoked.ExitCode);
    }

    [Fact]
    public async Task BadFleetTokens_AreRefusedWithTheReason_NothingCreated()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        async Task AssertRefusedAsync(object body, string code)
        {
            using var response = await coordinator.Http.PostAsJsonAsync("api/v1/enrollments", body);
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest, text);
            Assert.Equal(code, JsonNode.Parse(text)!["code"]!.GetValue<string>());
        }
        await AssertRefusedAsync(new { maxDevices = 0 }, "invalid-max-devices");
        await AssertRefusedAsync(new { maxDevices = 10_001 }, "invalid-max-devices");
        await AssertRefusedAsync(new { maxDevices = 3, agentId = "x1" }, "invalid-enrollment");
        await AssertRefusedAsync(new { }, "invalid-enrollment");
        await AssertRefusedAsync(new { maxDevices = 3, agentIdPattern = "rack/*" }, "invalid-agent-id-pattern");
        await AssertRefusedAsync(new { maxDevices = 3, labels = new Dictionary<string, string> { ["site"] = "a b" } }, "invalid-labels");
        Assert.Empty((await coordinator.Http.GetFromJsonAsync<JsonArray>("api/v1/enrollments"))!);
    }
}
