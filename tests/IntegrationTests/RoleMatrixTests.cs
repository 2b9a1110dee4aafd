using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Routing;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// Every mapped route is checked against the role matrix below: no credentials → 401, a role below the
/// route's → 403, the route's role → neither. A route that is not in the matrix fails the test, so a new
/// route cannot ship without a decision about who may call it.
/// </summary>
public sealed class RoleMatrixTests
{
    // Least role that may call each route. "anonymous" routes need no credentials (health probes; pack
    // URLs, whose signature is the credential).
    private static readonly Dictionary<string, string> Matrix = new(StringComparer.Ordinal)
    {
        ["GET /healthz"] = "anonymous",
        ["GET /readyz"] = "anonymous",
        ["GET /api/v1/packs/{packId}"] = "anonymous",
        ["GET /api/v1/tls/ca"] = "anonymous",
        ["POST /api/v1/session/login"] = "anonymous",
        ["GET /api/v1/session/"] = "viewer",
        ["POST /api/v1/session/logout"] = "viewer",
        ["PUT /api/v1/session/password"] = "viewer",
        ["POST /api/v1/session/token"] = "viewer",
        ["GET /api/v1/events"] = "viewer",
        ["POST /api/v1/integrations/home-assistant/credentials"] = "admin",
        ["GET /openapi/{documentName}.json"] = "viewer",
        ["GET /api/v1/users/"] = "admin",
        ["POST /api/v1/users/"] = "admin",
        ["PUT /api/v1/users/{name}"] = "admin",
        ["DELETE /api/v1/users/{name}"] = "admin",
        ["POST /api/v1/enroll"] = "enrollee",
        ["GET /api/v1/enrollments/"] = "admin",
        ["POST /api/v1/enrollments/"] = "admin",
        ["DELETE /api/v1/enrollments/{id}"] = "admin",
        ["GET /api/v1/images/"] = "viewer",
        ["GET /api/v1/images/{**name}"] = "viewer",
        ["GET /api/v1/agents/"] = "viewer",
        ["GET /api/v1/fleet/summary"] = "viewer",
        ["GET /api/v1/rollouts/"] = "viewer",
        ["GET /api/v1/rollouts/{id}"] = "viewer",
        ["GET /api/v1/rollouts/{id}/executions"] = "viewer",
        ["POST /api/v1/rollouts/"] = "operator",
        ["POST /api/v1/rollouts/{id}/pause"] = "operator",
        ["POST /api/v1/rollouts/{id}/resume"] = "operator",
        ["POST /api/v1/rollouts/{id}/cancel"] = "operator",
        ["POST /api/v1/rollouts/{id}/retry-failed"] = "operator",
        ["GET /api/v1/agents/{agentId}"] = "viewer",
        ["GET /api/v1/jobs"] = "viewer",
        ["GET /api/v1/jobs/{id}"] = "viewer",
        ["POST /api/v1/jobs/{id}/cancel"] = "admin",
        ["GET /api/v1/blobs/{digest}/manifest"] = "agent",
        ["GET /api/v1/blobs/{digest}/layout"] = "agent",
        ["GET /api/v1/signing-key"] = "agent",
        ["PUT /api/v1/agents/{agentId}/drives/{index:int}"] = "operator",
        ["PUT /api/v1/agents/{agentId}/bandwidth"] = "operator",
        ["PUT /api/v1/agents/{agentId}/labels"] = "operator",
        ["DELETE /api/v1/agents/{agentId}/staged/{image}"] = "operator",
        ["POST /api/v1/agents/{agentId}/drives/{index:int}/snapshot"] = "operator",
        ["GET /api/v1/agents/{agentId}/drives/{index:int}/snapshot"] = "viewer",
        ["PUT /api/v1/images/{**name}"] = "admin",
        ["DELETE /api/v1/images/{**name}"] = "admin",
        ["POST /api/v1/images/import"] = "admin",
        ["POST /api/v1/gc"] = "admin",
        ["POST /api/v1/agents/{agentId}/credentials"] = "admin",
        ["POST /api/v1/agents/{agentId}/disable"] = "admin",
        ["POST /api/v1/agents/{agentId}/enable"] = "admin",
        ["POST /api/v1/uploads/"] = "admin",
        ["GET /api/v1/uploads/{id}"] = "admin",
        ["POST /api/v1/uploads/{id}/parts/{part:int}"] = "admin",
        ["POST /api/v1/uploads/{id}/chunks"] = "admin",
        ["POST /api/v1/uploads/{id}/commit"] = "admin",
        ["DELETE /api/v1/uploads/{id}"] = "admin",
        ["GET /api/v1/tokens/"] = "admin",
        ["GET /api/v1/audit"] = "admin",
        ["GET /api/v1/broker/mosquitto/acl"] = "admin",
        ["GET /api/v1/broker/mosquitto/passwords"] = "admin",
        ["POST /api/v1/tokens/"] = "admin",
        ["DELETE /api/v1/tokens/{id}"] = "admin",
    };

    private static readonly string[] Ranks = ["viewer", "operator", "admin"];

    [Fact]
    public async Task EveryRoute_FollowsTheRoleMatrix()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var tokens = new Dictionary<string, string>();
        foreach (var role in Ranks)
        {
            using var created = await coordinator.Http.PostAsJsonAsync("api/v1/tokens", new { name = $"test-{role}", role, expiresInDays = 1 });
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
            tokens[role] = JsonNode.Parse(await created.Content.ReadAsStringAsync())!["token"]!.GetValue<string>();
        }
        var agentSecret = await coordinator.CreateAgentSecretAsync("matrix-agent");

        var routes = ((EndpointDataSource)coordinator.Services.GetService(typeof(EndpointDataSource))!).Endpoints.OfType<RouteEndpoint>()
            .SelectMany(e => (e.Metadata.GetMetadata<HttpMethodMetadata>()?.HttpMethods ?? ["GET"]).Select(m => (Method: m, Endpoint: e)))
            .ToList();
        Assert.NotEmpty(routes);
        var unmapped = routes.Select(r => $"{r.Method} {r.Endpoint.RoutePattern.RawText}").Where(k => !Matrix.ContainsKey(k)).ToList();
        Assert.True(unmapped.Count == 0, "routes without a row in the role matrix: " + string.Join(", ", unmapped));

        using var client = new HttpClient { BaseAddress = coordinator.BaseUrl };
        foreach (var (method, endpoint) in routes)
        {
            var key = $"{method} {endpoint.RoutePattern.RawText}";
            var least = Matrix[key];
            var anonymous = endpoint.Metadata.GetMetadata<IAllowAnonymous>() is not null;
            Assert.True(anonymous == (least == "anonymous"), $"{key}: AllowAnonymous does not match the matrix");
            var url = Concrete(endpoint.RoutePattern.RawText!);

            async Task<HttpStatusCode> CallAsync(AuthenticationHeaderValue? auth)
            {
                using var request = new HttpRequestMessage(new HttpMethod(method), url);
                if (method is "PUT" or "POST")
                    request.Content = new StringContent("{}", Encoding.UTF8, "application/json");
                request.Headers.Authorization = auth;
                using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead); // the event stream never ends
                return response.StatusCode;
            }

            if (least == "anonymous")
                continue;
            Assert.True(await CallAsync(null) == HttpStatusCode.Unauthorized, $"{key} without credentials is not 401");
            var asAgent = await CallAsync(new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("matrix-agent:" + agentSecret))));
            foreach (var role in Ranks)
            {
                var status = await CallAsync(new AuthenticationHeaderValue("Bearer", tokens[role]));
                var allowed = least switch
                {
                    "agent" => role != "viewer",
                    "enrollee" => false, // only a one-time enrollment token
                    _ => Array.IndexOf(Ranks, role) >= Array.IndexOf(Ranks, least),
                };
                if (allowed)
                    Assert.True(status is not (HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden), $"{key} as {role}: {(int)status}, expected allowed");
                else
                    Assert.True(status == HttpStatusCode.Forbidden, $"{key} as {role}: {(int)status}, expected 403");
            }
            if (least == "agent")
                Assert.True(asAgent is not (HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden) || key.Contains("/blobs/", StringComparison.Ordinal),
                    $"{key} as an agent: {(int)asAgent}");
            else
                Assert.True(asAgent == HttpStatusCode.Forbidden, $"{key} as an agent: {(int)asAgent}, expected 403");
        }
    }

    [Fact]
    public async Task Tokens_RevokedOrExpired_NoLongerWork()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        using var created = await coordinator.Http.PostAsJsonAsync("api/v1/tokens", new { name = "ci", role = "viewer" });
        var body = JsonNode.Parse(await created.Content.ReadAsStringAsync())!;
        using var client = new HttpClient { BaseAddress = coordinator.BaseUrl };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", body["token"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("api/v1/images")).StatusCode);
        var list = await coordinator.Http.GetStringAsync("api/v1/tokens");
        Assert.DoesNotContain(body["token"]!.GetValue<string>(), list, StringComparison.Ordinal); // listed without the secret
        Assert.Equal(HttpStatusCode.NoContent, (await coordinator.Http.DeleteAsync($"api/v1/tokens/{body["id"]}")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await client.GetAsync("api/v1/images")).StatusCode);
        using var bad = await coordinator.Http.PostAsJsonAsync("api/v1/tokens", new { name = "x", role = "root" });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
    }

    [Fact]
    public async Task AuditLog_RecordsWhoUploadedMountedEjectedAndDeleted_AcrossRestarts()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        using var created = await coordinator.Http.PostAsJsonAsync("api/v1/tokens", new { name = "alice", role = "operator" });
        var alice = JsonNode.Parse(await created.Content.ReadAsStringAsync())!["token"]!.GetValue<string>();
        await coordinator.CreateAgentSecretAsync("audited");
        await coordinator.Http.PutAsync("api/v1/images/audit.img", new ByteArrayContent(new byte[1000]));
        using var asAlice = new HttpClient { BaseAddress = coordinator.BaseUrl };
        asAlice.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", alice);
        (await asAlice.PutAsJsonAsync("api/v1/agents/audited/drives/0", new { image = "audit.img", mode = "flash" })).EnsureSuccessStatusCode();
        (await asAlice.PutAsJsonAsync("api/v1/agents/audited/drives/0", new { image = (string?)null })).EnsureSuccessStatusCode();
        (await coordinator.Http.DeleteAsync("api/v1/images/audit.img")).EnsureSuccessStatusCode();
        await coordinator.RestartAsync();

        var log = JsonNode.Parse(await coordinator.Http.GetStringAsync("api/v1/audit"))!.AsArray()
            .Select(e => (Actor: e!["actor"]!.GetValue<string>(), Action: e["action"]!.GetValue<string>(), Target: e["target"]!.GetValue<string>())).ToList();
        Assert.Contains(("bootstrap-admin", "token.create", log.First(e => e.Action == "token.create").Target), log);
        Assert.Contains(("bootstrap-admin", "image.upload", "audit.img"), log);
        Assert.Contains(("alice", "drive.mount", "audited/0"), log);
        Assert.Contains(("alice", "drive.eject", "audited/0"), log);
        Assert.Contains(("bootstrap-admin", "image.delete", "audit.img"), log);
        Assert.Equal(log.Select(e => e.Action).ToList(), ["token.create", "agent.credentials", "image.upload", "drive.mount", "drive.eject", "image.delete"]);
        using var viewerTry = await asAlice.GetAsync("api/v1/audit");
        Assert.Equal(HttpStatusCode.Forbidden, viewerTry.StatusCode);
    }

    private static string Concrete(string pattern) => pattern
        .Replace("{**name}", "matrix.img", StringComparison.Ordinal)
        // Rotating matrix-agent's credentials would lock the test's own agent caller out.
        .Replace("{agentId}", pattern.EndsWith("/credentials", StringComparison.Ordinal) || pattern.EndsWith("able", StringComparison.Ordinal)
            ? "rotated-agent" : "matrix-agent", StringComparison.Ordinal)
        .Replace("{index:int}", "0", StringComparison.Ordinal)
        .Replace("{part:int}", "0", StringComparison.Ordinal)
        .Replace("{name}", "matrix-user", StringComparison.Ordinal)
        .Replace("{documentName}", "v1", StringComparison.Ordinal)
        .Replace("{digest}", "sha256:" + new string('0', 64), StringComparison.Ordinal)
        .Replace("{packId}", new string('0', 64), StringComparison.Ordinal)
        .Replace("{id}", "0123456789abcdef", StringComparison.Ordinal)
        .TrimStart('/');
}
