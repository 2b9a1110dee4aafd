using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>Bad input gets a clear error with a stable code, and loses nothing.</summary>
public sealed class BadInputTests : IAsyncLifetime
{
    private CoordinatorInstance _coordinator = null!;
    private readonly string _work = TestPaths.NewTempDir("bad-input");

    public async Task InitializeAsync() => _coordinator = await CoordinatorInstance.StartAsync();

    public async Task DisposeAsync()
    {
        await _coordinator.DisposeAsync();
        Directory.Delete(_work, true);
    }

    private static async Task<JsonObject> ProblemAsync(HttpResponseMessage response, HttpStatusCode status, string code)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"expected {(int)status}, got {(int)response.StatusCode}: {body}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = JsonNode.Parse(body)!.AsObject();
        Assert.Equal(code, problem["code"]!.GetValue<string>());
        Assert.False(string.IsNullOrWhiteSpace(problem["detail"]?.GetValue<string>()));
        Assert.DoesNotContain("   at ", body, StringComparison.Ordinal); // no stack traces to clients
        return problem;
    }

    [Theory]
    [InlineData("limit=0")]
    [InlineData("limit=10001")]
    [InlineData("limit=ten")]
    [InlineData("before=-3")]
    [InlineData("since=yesterday")]
    [InlineData("since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z")]
    public async Task AuditQuery_Invalid_400WithCode(string query)
    {
        using var response = await _coordinator.Http.GetAsync($"api/v1/audit?{query}");
        await ProblemAsync(response, HttpStatusCode.BadRequest, "invalid-audit-query");
    }

    [Fact]
    public async Task AuditQuery_FullPage_LinksToTheOlderPage()
    {
        for (var i = 0; i < 3; i++)
            (await _coordinator.Http.PostAsync("api/v1/tokens", new StringContent($"{{\"name\":\"t{i}\",\"role\":\"viewer\"}}", Encoding.UTF8, "application/json"))).Dispose();
        using var first = await _coordinator.Http.GetAsync("api/v1/audit?action=token.create&limit=2");
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        var page = JsonNode.Parse(await first.Content.ReadAsStringAsync())!.AsArray();
        Assert.Equal(["t1", "t2"], page.Select(e => e!["detail"]!.GetValue<string>().Split(' ')[0]));
        var next = first.Headers.GetValues("Link").Single();
        Assert.Contains("rel=\"next\"", next, StringComparison.Ordinal);
        var url = next[(next.IndexOf('<', StringComparison.Ordinal) + 2)..next.IndexOf('>', StringComparison.Ordinal)];
        using var older = await _coordinator.Http.GetAsync(url);
        var rest = JsonNode.Parse(await older.Content.ReadAsStringAsync())!.AsArray();
        Assert.Single(rest);
        Assert.StartsWith("t0 ", rest[0]!["detail"]!.GetValue<string>(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("api/v1/images/.")]
    [InlineData("api/v1/images/..%2F..%2Fetc%2Fpasswd")]
    [InlineData("api/v1/images/a%2Fb")]
    [InlineData("api/v1/images/a/b")]
    [InlineData("api/v1/images/bad%01name")]
    [InlineData("api/v1/images/esc%1Bname")]
    [InlineData("api/v1/images/del%7F")]
    [InlineData("api/v1/images/")]
    public async Task Upload_InvalidName_400AndNothingStored(string path)
    {
        using var response = await _coordinator.Http.PutAsync(path, new ByteArrayContent([1, 2, 3]));
        await ProblemAsync(response, HttpStatusCode.BadRequest, "invalid-image-name");
        using var list = await _coordinator.Http.GetAsync("api/v1/images");
        Assert.Equal("[]", await list.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Upload_NameOver255Bytes_400()
    {
        using var response = await _coordinator.Http.PutAsync("api/v1/images/" + new string('a', 256), new ByteArrayContent([1]));
        var problem = await ProblemAsync(response, HttpStatusCode.BadRequest, "invalid-image-name");
        Assert.Contains("255", problem["detail"]!.GetValue<string>(), StringComparison.Ordinal);
        using var ok = await _coordinator.Http.PutAsync("api/v1/images/" + new string('a', 255), new ByteArrayContent([1]));
        Assert.Equal(HttpStatusCode.Created, ok.StatusCode);
    }

    [Fact]
    public async Task DriveRequest_UnknownImage_404()
    {
        await _coordinator.CreateAgentSecretAsync("a1");
        using var response = await _coordinator.SetDriveAsync("a1", 0, new { image = "nope.iso", mode = "cdrom" });
        await ProblemAsync(response, HttpStatusCode.NotFound, "image-not-found");
    }

    [Fact]
    public async Task DriveRequest_BadFields_400()
    {
        await _coordinator.CreateAgentSecretAsync("a1");
        await _coordinator.UploadAsync("x.img", await WriteAsync("x.img", 1000));
        using (var r = await _coordinator.SetDriveAsync("a1", 0, new { image = "x.img", mode = "floppy" }))
            await ProblemAsync(r, HttpStatusCode.BadRequest, "invalid-mode");
        using (var r = await _coordinator.SetDriveAsync("a1", 0, new { image = "x.img", mode = "cdrom", readOnly = false }))
            await ProblemAsync(r, HttpStatusCode.BadRequest, "invalid-mode");
        using (var r = await _coordinator.SetDriveAsync("a1", 99, new { image = "x.img", mode = "cdrom" }))
            await ProblemAsync(r, HttpStatusCode.BadRequest, "invalid-drive");
        using (var r = await _coordinator.SetDriveAsync("no-such-agent", 0, new { image = "x.img", mode = "cdrom" }))
            await ProblemAsync(r, HttpStatusCode.NotFound, "agent-not-found");
        using (var r = await _coordinator.SetDriveAsync("bad+id", 0, new { image = "x.img", mode = "cdrom" }))
            await ProblemAsync(r, HttpStatusCode.BadRequest, "invalid-agent-id");
    }

    [Theory]
    [InlineData(null)]
    [InlineData("Bearer msdf_wrong")]
    [InlineData("Bearer ")]
    [InlineData("Basic bm90LWFuLWFnZW50OnNlY3JldA==")]
    [InlineData("Basic !!!")]
    [InlineData("Digest abc")]
    public async Task Api_MissingOrWrongCredentials_401(string? authorization)
    {
        using var client = new HttpClient { BaseAddress = _coordinator.BaseUrl };
        foreach (var (method, path) in new[] { (HttpMethod.Get, "api/v1/images"), (HttpMethod.Put, "api/v1/images/x.iso"), (HttpMethod.Get, "api/v1/agents"),
                     (HttpMethod.Put, "api/v1/agents/a/drives/0"), (HttpMethod.Delete, "api/v1/images/x.iso"), (HttpMethod.Get, "api/v1/blobs/sha256:00/layout") })
        {
            using var request = new HttpRequestMessage(method, path);
            if (authorization is not null)
                request.Headers.TryAddWithoutValidation("Authorization", authorization);
            using var response = await client.SendAsync(request);
            await ProblemAsync(response, HttpStatusCode.Unauthorized, "unauthenticated");
        }
        using var health = await client.GetAsync("healthz");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
    }

    [Fact]
    public async Task AgentCredentials_OnlyImagesOfItsOwnDesiredState_AndNoAdminRoutes()
    {
        var secretA = await _coordinator.CreateAgentSecretAsync("agent-a");
        await _coordinator.CreateAgentSecretAsync("agent-b");
        var digest = (await _coordinator.UploadAsync("x.img", await WriteAsync("x.img", 100_000)))["digest"]!.GetValue<string>();
        using (var set = await _coordinator.SetDriveAsync("agent-b", 0, new { image = "x.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);

        using var asAgentA = new HttpClient { BaseAddress = _coordinator.BaseUrl };
        asAgentA.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("agent-a:" + secretA)));
        using (var r = await asAgentA.GetAsync($"api/v1/blobs/{digest}/layout"))
            await ProblemAsync(r, HttpStatusCode.Forbidden, "image-not-assigned");
        using (var r = await asAgentA.GetAsync("api/v1/images"))
            await ProblemAsync(r, HttpStatusCode.Forbidden, "forbidden");
        using (var r = await asAgentA.PutAsync("api/v1/images/evil.iso", new ByteArrayContent([1])))
            await ProblemAsync(r, HttpStatusCode.Forbidden, "forbidden");

        using var wrongSecret = new HttpClient { BaseAddress = _coordinator.BaseUrl };
        wrongSecret.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("agent-b:msda_wrong")));
        using (var r = await wrongSecret.GetAsync($"api/v1/blobs/{digest}/layout"))
            await ProblemAsync(r, HttpStatusCode.Unauthorized, "unauthenticated");
    }

    [Fact]
    public async Task MalformedMessagePack_OnAgentTopics_DroppedAndEveryoneKeepsRunning()
    {
        await using var mosquitto = await MosquittoBroker.StartAsync();
        await using var coordinator = await CoordinatorInstance.StartAsync(mosquitto.Url);
        await using var agent = new AgentProcess("victim", await coordinator.CreateAgentSecretAsync("victim"), coordinator);
        agent.Start();
        await coordinator.WaitForAgentAsync("victim", a => a["online"]!.GetValue<bool>() && a["drives"] is not null, "online", diagnostics: () => agent.Log);

        using var attacker = new MqttClientFactory().CreateMqttClient();
        await attacker.ConnectAsync(new MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", mosquitto.Port).WithProtocolVersion(MqttProtocolVersion.V500).Build());
        byte[][] garbage = [[0xc1], [0x93, 0x07], [0xdd, 0x7f, 0xff, 0xff, 0xff], Encoding.UTF8.GetBytes("{\"json\":true}"), new byte[2 * 1024 * 1024]];
        foreach (var payload in garbage)
        {
            await attacker.PublishAsync(new MqttApplicationMessageBuilder().WithTopic($"{coordinator.TopicPrefix}/agents/victim/desired")
                .WithPayload(payload).WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build());
            await attacker.PublishAsync(new MqttApplicationMessageBuilder().WithTopic($"{coordinator.TopicPrefix}/agents/ghost/reported")
                .WithPayload(payload).WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build());
        }
        await Eventually.WaitAsync(() => agent.Log.Split("Dropped malformed or untrusted desired state").Length - 1 >= garbage.Length,
            TimeSpan.FromSeconds(20), "the agent to log every malformed payload", () => agent.Log);
        Assert.False(agent.HasExited);

        // Both sides still work: a real desired state is applied and reported.
        var digest = (await coordinator.UploadAsync("ok.img", await WriteAsync("ok.img", 300_000)))["digest"]!.GetValue<string>();
        using (var set = await coordinator.SetDriveAsync("victim", 0, new { image = "ok.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);
        await coordinator.WaitForAgentAsync("victim", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == digest, "attached after garbage", diagnostics: () => agent.Log);
        var ghost = await coordinator.GetAgentAsync("ghost");
        Assert.True(ghost is null || ghost["drives"] is null);
    }

    private async Task<string> WriteAsync(string name, int size)
    {
        var (path, _) = await TestImages.CreateAsync(_work, name, size, seed: size);
        return path;
    }
}
