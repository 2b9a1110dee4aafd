using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// The whole path over TLS, as on a real device: an admin creates a one-time enrollment token on a
/// Coordinator with its generated CA; the agent binary enrolls (first contact pinned by the CA's
/// fingerprint), writes its 0600 configuration, then runs from it alone over HTTPS and MQTT over TLS,
/// and an uploaded image arrives intact on its LUN.
/// </summary>
public sealed class TlsEnrollmentTests : IAsyncLifetime
{
    private readonly string _work = TestPaths.NewTempDir("tls");

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        Directory.Delete(_work, true);
        return Task.CompletedTask;
    }

    [Fact]
    public async Task Enroll_OverTls_ThenMountsAnImage_EndToEnd()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync(tls: true);
        var enrollment = await CreateEnrollmentAsync(coordinator, "tls-agent");
        var token = enrollment["token"]!.GetValue<string>();
        var fingerprint = enrollment["caSha256"]!.GetValue<string>();
        Assert.StartsWith("sha256:", fingerprint, StringComparison.Ordinal);
        Assert.Contains($"--ca-sha256 {fingerprint}", enrollment["command"]!.GetValue<string>(), StringComparison.Ordinal);

        // Without the fingerprint the device trusts only the system roots: refused, nothing written.
        var untrusted = Path.Combine(_work, "untrusted", "agent.json");
        var (code, _, error) = await AgentProcess.RunCommandAsync(["enroll", "--coordinator", coordinator.BaseUrl.ToString(), "--token", token, "--config", untrusted]);
        Assert.True(code == 4, $"exit {code}: {error}");
        Assert.Contains("does not trust", error, StringComparison.Ordinal);
        Assert.False(File.Exists(untrusted));

        // A wrong fingerprint (another Coordinator's CA, or a man in the middle): refused, nothing written.
        var wrong = Path.Combine(_work, "wrong", "agent.json");
        (code, _, error) = await AgentProcess.RunCommandAsync(["enroll", "--coordinator", coordinator.BaseUrl.ToString(), "--token", token,
            "--ca-sha256", "sha256:" + new string('a', 64), "--config", wrong]);
        Assert.True(code == 4, $"exit {code}: {error}");
        Assert.False(File.Exists(wrong));

        // The token was not spent by the refused attempts; now the real enrollment.
        var config = Path.Combine(_work, "device", "agent.json");
        (code, var output, error) = await AgentProcess.RunCommandAsync(["enroll", "--coordinator", coordinator.BaseUrl.ToString(), "--ca-sha256", fingerprint,
            "--config", config], new Dictionary<string, string> { ["MSDFLEET_ENROLL_TOKEN"] = token });
        Assert.True(code == 0, $"exit {code}: {output} {error}");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(config));
        var written = JsonNode.Parse(await File.ReadAllTextAsync(config))!;
        Assert.Equal("tls-agent", written["Agent"]!["Id"]!.GetValue<string>());
        Assert.Equal(coordinator.BrokerUrl.ToString().TrimEnd('/'), written["Mqtt"]!["Broker"]!.GetValue<string>().TrimEnd('/'));
        Assert.Equal(coordinator.TopicPrefix, written["Mqtt"]!["TopicPrefix"]!.GetValue<string>());
        Assert.Equal(await File.ReadAllTextAsync(coordinator.CaPath), await File.ReadAllTextAsync(written["Agent"]!["CaCertificatePath"]!.GetValue<string>()));
        Assert.DoesNotContain(token, await File.ReadAllTextAsync(config), StringComparison.Ordinal);

        // One time only.
        var again = Path.Combine(_work, "again", "agent.json");
        (code, _, error) = await AgentProcess.RunCommandAsync(["enroll", "--coordinator", coordinator.BaseUrl.ToString(), "--token", token,
            "--ca-sha256", fingerprint, "--config", again]);
        Assert.True(code == 3, $"exit {code}: {error}");
        Assert.False(File.Exists(again));

        // The agent runs from that file alone: HTTPS and MQTT over TLS, pinned signing key.
        await using var agent = new AgentProcess("tls-agent", "unused", coordinator);
        agent.UseConfigFile(config);
        agent.Start();
        await coordinator.WaitForAgentAsync("tls-agent", a => a["online"]!.GetValue<bool>() && a["drives"] is not null, "online over TLS", diagnostics: () => agent.Log);
        var (path, sha256) = await TestImages.CreateAsync(_work, "tls.iso", 24L * 1024 * 1024 + 77, seed: 9);
        var upload = await coordinator.UploadAsync("tls.iso", path);
        using (var set = await coordinator.SetDriveAsync("tls-agent", 0, new { image = "tls.iso", mode = "cdrom" }))
            Assert.True(set.IsSuccessStatusCode, await set.Content.ReadAsStringAsync());
        await coordinator.WaitForAgentAsync("tls-agent",
            a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == upload["digest"]!.GetValue<string>(),
            "reports the image attached", diagnostics: () => agent.Log);
        Assert.Equal(sha256, TestImages.Sha256Of(agent.Lun("file")));

        // Nothing listens in clear: a plain MQTT connect to the broker port does not get a session.
        using var plain = new MQTTnet.MqttClientFactory().CreateMqttClient();
        await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await plain.ConnectAsync(new MQTTnet.MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", coordinator.MqttPort)
                .WithCredentials("tls-agent", "x").WithTimeout(TimeSpan.FromSeconds(3)).Build(), timeout.Token);
        });
    }

    [Fact]
    public async Task ExternalMosquittoOverTls_CoordinatorAndAgentVerifyTheCa_EndToEnd()
    {
        // One CA for everything: generated as the Coordinator would, its server certificate given to Mosquitto.
        var tlsDirectory = Path.Combine(_work, "tls");
        using (MsdFleet.Coordinator.Security.TlsCertificates.Load(new MsdFleet.Coordinator.Security.TlsOptions { Mode = "self-signed", Directory = tlsDirectory }, TimeProvider.System))
        {
        }
        await using var mosquitto = await MosquittoBroker.StartAsync(tls: (Path.Combine(tlsDirectory, "server.crt"), Path.Combine(tlsDirectory, "server.key")));
        Assert.Equal("mqtts", mosquitto.Url.Scheme);
        await using var coordinator = await CoordinatorInstance.StartAsync(mosquitto.Url, tls: true, tlsDirectory: tlsDirectory,
            extraArgs: [$"--Mqtt:CaCertificatePath={Path.Combine(tlsDirectory, "ca.crt")}"]);
        await using var agent = new AgentProcess("mqtts-agent", await coordinator.CreateAgentSecretAsync("mqtts-agent"), coordinator);
        agent.SetEnvironment("Agent__CaCertificatePath", coordinator.CaPath);
        agent.Start();
        await coordinator.WaitForAgentAsync("mqtts-agent", a => a["online"]!.GetValue<bool>() && a["drives"] is not null, "online through Mosquitto over TLS",
            diagnostics: () => agent.Log);
        var (path, sha256) = await TestImages.CreateAsync(_work, "mqtts.img", 5L * 1024 * 1024 + 3, seed: 12);
        await coordinator.UploadAsync("mqtts.img", path);
        (await coordinator.SetDriveAsync("mqtts-agent", 0, new { image = "mqtts.img", mode = "flash" })).EnsureSuccessStatusCode();
        await coordinator.WaitForAgentAsync("mqtts-agent", a => CoordinatorInstance.Drive(a, 0)?["connected"]?.GetValue<bool>() == true, "attached",
            diagnostics: () => agent.Log);
        Assert.Equal(sha256, TestImages.Sha256Of(agent.Lun("file")));

        // An agent that does not trust this CA never gets a session.
        await using var stranger = new AgentProcess("stranger", await coordinator.CreateAgentSecretAsync("stranger"), coordinator);
        stranger.Start();
        await Eventually.WaitAsync(() => stranger.Log.Contains("Cannot connect to MQTT broker", StringComparison.Ordinal), TimeSpan.FromSeconds(60),
            "the stranger's TLS handshake to fail", () => stranger.Log);
        Assert.False((await coordinator.GetAgentAsync("stranger"))!["online"]!.GetValue<bool>());
    }

    [Fact]
    public async Task Enrollment_TokensAreAdminOnly_Expire_AndCanBeRevoked()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var enrollment = await CreateEnrollmentAsync(coordinator, "revoked-agent");
        var token = enrollment["token"]!.GetValue<string>();
        // An enrollment token is good for nothing but enrolling.
        using (var asEnrollee = coordinator.NewClient(token))
            Assert.Equal(HttpStatusCode.Forbidden, (await asEnrollee.GetAsync("api/v1/images")).StatusCode);
        var list = await coordinator.Http.GetStringAsync("api/v1/enrollments");
        Assert.Contains("revoked-agent", list, StringComparison.Ordinal);
        Assert.DoesNotContain(token, list, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.NoContent, (await coordinator.Http.DeleteAsync($"api/v1/enrollments/{enrollment["id"]}")).StatusCode);
        var (code, _, error) = await AgentProcess.RunCommandAsync(["enroll", "--coordinator", coordinator.BaseUrl.ToString(), "--token", token,
            "--config", Path.Combine(_work, "revoked", "agent.json")]);
        Assert.True(code == 3, $"exit {code}: {error}");

        // An existing agent is not silently re-enrolled; bad input is refused with a reason.
        await coordinator.CreateAgentSecretAsync("existing");
        using (var conflict = await coordinator.Http.PostAsJsonAsync("api/v1/enrollments", new { agentId = "existing" }))
            Assert.Equal(HttpStatusCode.Conflict, conflict.StatusCode);
        using (var replace = await coordinator.Http.PostAsJsonAsync("api/v1/enrollments", new { agentId = "existing", replace = true }))
            Assert.Equal(HttpStatusCode.Created, replace.StatusCode);
        using (var bad = await coordinator.Http.PostAsJsonAsync("api/v1/enrollments", new { agentId = "../etc" }))
            Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        using (var badExpiry = await coordinator.Http.PostAsJsonAsync("api/v1/enrollments", new { agentId = "x1", expiresInHours = 0 }))
            Assert.Equal(HttpStatusCode.BadRequest, badExpiry.StatusCode);
        // Plain HTTP to a non-loopback Coordinator is refused before the token leaves the device.
        (code, _, error) = await AgentProcess.RunCommandAsync(["enroll", "--coordinator", "http://192.0.2.1:8080/", "--token", "msde_x"]);
        Assert.True(code == 2, $"exit {code}: {error}");
        Assert.Contains("plain HTTP", error, StringComparison.Ordinal);
    }

    private static async Task<JsonObject> CreateEnrollmentAsync(CoordinatorInstance coordinator, string agentId)
    {
        using var response = await coordinator.Http.PostAsJsonAsync("api/v1/enrollments", new { agentId, expiresInHours = 1 });
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, body);
        return JsonNode.Parse(body)!.AsObject();
    }
}
