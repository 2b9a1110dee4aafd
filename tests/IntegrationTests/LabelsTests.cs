using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// Labels set centrally, merged over what agents report (central wins), and Kubernetes-style selectors on
/// the fleet list; bad labels and selectors are refused with a problem naming what is wrong.
/// </summary>
public sealed class LabelsTests
{
    [Fact]
    public async Task CentralLabels_OverrideReported_SelectorsFilterTheFleet_BadInputIsRefused()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        // A running agent that reports test=true (AgentProcess sets it) and site=lab.
        await using var agent = new AgentProcess("lab-01", await coordinator.CreateAgentSecretAsync("lab-01"), coordinator);
        agent.SetEnvironment("Agent__Labels__site", "lab");
        agent.Start();
        await coordinator.CreateAgentSecretAsync("ams1-r1-07");
        await coordinator.CreateAgentSecretAsync("ams1-r3-02");
        await coordinator.WaitForAgentAsync("lab-01", a => a["reportedLabels"]?["site"]?.GetValue<string>() == "lab", "lab-01 to report its labels",
            diagnostics: () => agent.Log);

        async Task<JsonObject> LabelAsync(string id, object labels)
        {
            using var put = await coordinator.Http.PutAsJsonAsync($"api/v1/agents/{id}/labels", new { labels });
            Assert.True(put.IsSuccessStatusCode, await put.Content.ReadAsStringAsync());
            return (await put.Content.ReadFromJsonAsync<JsonObject>())!;
        }
        var lab = await LabelAsync("lab-01", new Dictionary<string, string> { ["site"] = "ams1", ["rack"] = "r9" });
        Assert.Equal("ams1", lab["site"]!.GetValue<string>()); // central wins over the reported site=lab
        Assert.Equal("""{"rack":"r9","site":"ams1","test":"true"}""", lab["labels"]!.ToJsonString());
        Assert.Equal("lab", lab["reportedLabels"]!["site"]!.GetValue<string>());
        await LabelAsync("ams1-r1-07", new Dictionary<string, string> { ["site"] = "ams1", ["rack"] = "r1" });
        await LabelAsync("ams1-r3-02", new Dictionary<string, string> { ["site"] = "ams1", ["rack"] = "r3", ["maintenance"] = "" });

        async Task<string[]> SelectAsync(string selector) =>
            (await coordinator.Http.GetFromJsonAsync<JsonArray>($"api/v1/agents?selector={Uri.EscapeDataString(selector)}"))!
                .Select(a => a!["id"]!.GetValue<string>()).ToArray();
        Assert.Equal(["ams1-r1-07", "ams1-r3-02", "lab-01"], await SelectAsync("site=ams1"));
        Assert.Equal(["ams1-r1-07"], await SelectAsync("site=ams1,rack in (r1,r2),!maintenance"));
        Assert.Equal(["ams1-r3-02"], await SelectAsync("maintenance"));
        Assert.Equal(["lab-01"], await SelectAsync("test=true"));
        Assert.Empty(await SelectAsync("site=lab")); // what the agent reports no longer counts where central says otherwise
        Assert.Empty(await SelectAsync("site=nowhere")); // a selector matching nothing is an empty list, not an error

        // Clearing the central labels brings the reported ones back; the change is a live event too.
        var cleared = await LabelAsync("lab-01", new Dictionary<string, string>());
        Assert.Equal("lab", cleared["site"]!.GetValue<string>());
        Assert.Equal(["lab-01"], await SelectAsync("site=lab"));

        async Task AssertProblemAsync(HttpResponseMessage response, HttpStatusCode status, string code)
        {
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == status, $"{(int)response.StatusCode} {body}");
            Assert.Equal(code, JsonNode.Parse(body)!["code"]!.GetValue<string>());
        }
        using (var bad = await coordinator.Http.GetAsync($"api/v1/agents?selector={Uri.EscapeDataString("site in ams1")}"))
            await AssertProblemAsync(bad, HttpStatusCode.BadRequest, "invalid-selector");
        using (var bad = await coordinator.Http.PutAsJsonAsync("api/v1/agents/ams1-r1-07/labels", new { labels = new Dictionary<string, string> { ["site"] = "ams 1" } }))
            await AssertProblemAsync(bad, HttpStatusCode.BadRequest, "invalid-labels");
        using (var bad = await coordinator.Http.PutAsJsonAsync("api/v1/agents/ams1-r1-07/labels", new { site = "ams1" }))
            await AssertProblemAsync(bad, HttpStatusCode.BadRequest, "invalid-labels");
        using (var bad = await coordinator.Http.PutAsJsonAsync("api/v1/agents/ghost/labels", new { labels = new Dictionary<string, string> { ["site"] = "x" } }))
            await AssertProblemAsync(bad, HttpStatusCode.NotFound, "agent-not-found");
        // Nothing was changed by the refused requests.
        Assert.Equal("""{"rack":"r1","site":"ams1"}""", (await coordinator.GetAgentAsync("ams1-r1-07"))!["centralLabels"]!.ToJsonString());

        // The fleet view: free text, state filters, pages with a next link, and counts by state and site.
        Assert.Equal(["ams1-r1-07", "ams1-r3-02"], (await coordinator.Http.GetFromJsonAsync<JsonArray>("api/v1/agents?q=AMS1-R"))!
            .Select(a => a!["id"]!.GetValue<string>()));
        var offline = (await coordinator.Http.GetFromJsonAsync<JsonArray>("api/v1/agents?state=offline"))!.Select(a => a!["id"]!.GetValue<string>()).ToArray();
        Assert.Equal(["ams1-r1-07", "ams1-r3-02"], offline); // lab-01 runs
        var online = (await coordinator.Http.GetFromJsonAsync<JsonArray>("api/v1/agents?state=online,pulling"))!.Select(a => a!["id"]!.GetValue<string>()).ToArray();
        Assert.Equal(["lab-01"], online);
        using (var first = await coordinator.Http.GetAsync("api/v1/agents?limit=2"))
        {
            Assert.Equal(["ams1-r1-07", "ams1-r3-02"], (await first.Content.ReadFromJsonAsync<JsonArray>())!.Select(a => a!["id"]!.GetValue<string>()));
            var next = first.Headers.GetValues("Link").Single();
            Assert.Contains("after=ams1-r3-02", next, StringComparison.Ordinal);
            var url = next[(next.IndexOf('<', StringComparison.Ordinal) + 1)..next.IndexOf('>', StringComparison.Ordinal)].TrimStart('/');
            using var second = await coordinator.Http.GetAsync(url);
            Assert.Equal(["lab-01"], (await second.Content.ReadFromJsonAsync<JsonArray>())!.Select(a => a!["id"]!.GetValue<string>()));
            Assert.False(second.Headers.Contains("Link"));
        }
        var summary = (await coordinator.Http.GetFromJsonAsync<JsonObject>("api/v1/fleet/summary"))!;
        Assert.Equal(3, summary["counts"]!["total"]!.GetValue<long>());
        Assert.Equal(2, summary["counts"]!["offline"]!.GetValue<long>());
        Assert.Equal(2, summary["sites"]!["ams1"]!["total"]!.GetValue<long>());
        Assert.Equal(1, summary["sites"]!["lab"]!["online"]!.GetValue<long>());
        using (var bad = await coordinator.Http.GetAsync("api/v1/agents?state=asleep"))
            await AssertProblemAsync(bad, HttpStatusCode.BadRequest, "invalid-state");
        using (var bad = await coordinator.Http.GetAsync("api/v1/agents?limit=0"))
            await AssertProblemAsync(bad, HttpStatusCode.BadRequest, "invalid-limit");

        // Labels survive a restart (they are in the state database).
        await coordinator.RestartAsync();
        Assert.Equal(["ams1-r1-07"], await SelectAsync("rack=r1"));
    }
}
