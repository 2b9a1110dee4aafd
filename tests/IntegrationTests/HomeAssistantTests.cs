using System.Collections.Concurrent;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// Home Assistant MQTT discovery, seen as Home Assistant sees it: log in as the integration's MQTT user,
/// read the discovery configs, select an image through the select's command topic and watch a real agent
/// attach it, press eject, re-announce after Home Assistant's birth message — and nothing beyond its ACL.
/// </summary>
public sealed class HomeAssistantTests : IAsyncLifetime
{
    private readonly string _work = TestPaths.NewTempDir("ha");

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        Directory.Delete(_work, true);
        return Task.CompletedTask;
    }

    [Fact]
    public async Task Discovery_SelectImage_AgentAttaches_EjectButton_Birth_Acl()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        await using var agent = new AgentProcess("ha-agent", await coordinator.CreateAgentSecretAsync("ha-agent"), coordinator);
        agent.Start();
        await coordinator.WaitForAgentAsync("ha-agent", a => a["online"]!.GetValue<bool>() && a["drives"] is not null, "online", diagnostics: () => agent.Log);
        var (path, sha256) = await TestImages.CreateAsync(_work, "ha.img", 6L * 1024 * 1024 + 5, seed: 41);
        await coordinator.UploadAsync("ha.img", path);
        using var created = await coordinator.Http.PostAsync("api/v1/integrations/home-assistant/credentials", null);
        var login = JsonNode.Parse(await created.Content.ReadAsStringAsync())!;
        var user = login["username"]!.GetValue<string>();
        var password = login["password"]!.GetValue<string>();

        var seen = new ConcurrentDictionary<string, string>(StringComparer.Ordinal);
        var configCount = 0;
        using var ha = new MqttClientFactory().CreateMqttClient();
        ha.ApplicationMessageReceivedAsync += e =>
        {
            seen[e.ApplicationMessage.Topic] = Encoding.UTF8.GetString(e.ApplicationMessage.Payload);
            if (e.ApplicationMessage.Topic.EndsWith("/config", StringComparison.Ordinal))
                Interlocked.Increment(ref configCount);
            return Task.CompletedTask;
        };
        var connected = await ha.ConnectAsync(new MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", coordinator.MqttPort)
            .WithClientId("home-assistant-test").WithCredentials(user, password).WithProtocolVersion(MqttProtocolVersion.V500).Build());
        Assert.Equal(MqttClientConnectResultCode.Success, connected.ResultCode);
        await ha.SubscribeAsync(new MqttClientSubscribeOptionsBuilder()
            .WithTopicFilter("homeassistant/#", MqttQualityOfServiceLevel.AtLeastOnce)
            .WithTopicFilter($"{coordinator.TopicPrefix}/ha/#", MqttQualityOfServiceLevel.AtLeastOnce).Build());

        const string selectTopic = "homeassistant/select/msdfleet_ha-agent/drive0_image/config";
        await Eventually.WaitAsync(() => seen.TryGetValue(selectTopic, out var c) && c.Contains("ha.img", StringComparison.Ordinal),
            TimeSpan.FromSeconds(30), "the select's discovery config lists ha.img");
        var select = JsonNode.Parse(seen[selectTopic])!;
        Assert.Equal("msdfleet_ha-agent", select["device"]!["identifiers"]![0]!.GetValue<string>());
        Assert.Contains("ha.img", select["options"]!.AsArray().Select(o => o!.GetValue<string>()));
        Assert.Equal("all", select["availability_mode"]!.GetValue<string>());
        var availability = select["availability"]!.AsArray().Select(a => a!["topic"]!.GetValue<string>()).ToList();
        Assert.Equal(2, availability.Count);
        foreach (var component in new[] { "switch/msdfleet_ha-agent/drive0_connected", "binary_sensor/msdfleet_ha-agent/drive0_enumerated",
                     "button/msdfleet_ha-agent/drive0_eject", "sensor/msdfleet_ha-agent/pull_progress", "sensor/msdfleet_ha-agent/free_space" })
            Assert.True(seen.ContainsKey($"homeassistant/{component}/config"), $"no discovery for {component}");
        await Eventually.WaitAsync(() => availability.All(t => seen.GetValueOrDefault(t) == "online"), TimeSpan.FromSeconds(30), "bridge and agent available");
        var freeState = seen[JsonNode.Parse(seen["homeassistant/sensor/msdfleet_ha-agent/free_space/config"])!["state_topic"]!.GetValue<string>()];
        Assert.True(long.Parse(freeState, System.Globalization.CultureInfo.InvariantCulture) > 0);

        // Selecting the image is a mount, done by a real agent.
        await ha.PublishAsync(new MqttApplicationMessageBuilder().WithTopic(select["command_topic"]!.GetValue<string>()).WithPayload("ha.img")
            .WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build());
        var stateTopic = select["state_topic"]!.GetValue<string>();
        await Eventually.WaitAsync(() => seen.GetValueOrDefault(stateTopic) == "ha.img", TimeSpan.FromSeconds(60), "the select shows ha.img", () => agent.Log);
        Assert.Equal(sha256, TestImages.Sha256Of(agent.Lun("file")));
        var connectedState = JsonNode.Parse(seen["homeassistant/switch/msdfleet_ha-agent/drive0_connected/config"])!["state_topic"]!.GetValue<string>();
        Assert.Equal("ON", seen[connectedState]);

        // Home Assistant restarts and announces itself: everything is announced again.
        var before = Volatile.Read(ref configCount);
        await ha.PublishAsync(new MqttApplicationMessageBuilder().WithTopic("homeassistant/status").WithPayload("online").Build());
        await Eventually.WaitAsync(() => Volatile.Read(ref configCount) >= before + 6, TimeSpan.FromSeconds(30), "discovery re-published after birth");

        // The eject button empties the drive.
        var eject = JsonNode.Parse(seen["homeassistant/button/msdfleet_ha-agent/drive0_eject/config"])!["command_topic"]!.GetValue<string>();
        await ha.PublishAsync(new MqttApplicationMessageBuilder().WithTopic(eject).WithPayload("PRESS").WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build());
        await Eventually.WaitAsync(() => seen.GetValueOrDefault(stateTopic) == "(none)", TimeSpan.FromSeconds(60), "the select shows (none)", () => agent.Log);
        Assert.Equal(string.Empty, agent.Lun("file"));

        // Home Assistant's login is confined: no desired state, no agent topics, no wildcard reads.
        var denied = await ha.PublishAsync(new MqttApplicationMessageBuilder().WithTopic($"{coordinator.TopicPrefix}/agents/ha-agent/desired")
            .WithPayload(new byte[] { 1 }).WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build());
        Assert.Equal(MqttClientPublishReasonCode.NotAuthorized, denied.ReasonCode);
        var wildcard = await ha.SubscribeAsync(new MqttClientSubscribeOptionsBuilder().WithTopicFilter("#").Build());
        Assert.Equal(MqttClientSubscribeResultCode.NotAuthorized, wildcard.Items.Single().ResultCode);

        var audit = JsonNode.Parse(await coordinator.Http.GetStringAsync("api/v1/audit"))!.AsArray();
        Assert.Contains(audit, e => e!["actor"]!.GetValue<string>() == "home-assistant" && e["action"]!.GetValue<string>() == "drive.mount");
        Assert.Contains(audit, e => e!["actor"]!.GetValue<string>() == "home-assistant" && e["action"]!.GetValue<string>() == "drive.eject");
    }

    [Fact]
    public async Task CommandsSwitchedOff_EntitiesAreReadOnly_AndCommandsAreIgnored()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync(extraArgs: ["--HomeAssistant:Commands=false"]);
        await coordinator.CreateAgentSecretAsync("ro-agent");
        await coordinator.Http.PutAsync("api/v1/images/ro.img", new ByteArrayContent(new byte[4096]));
        using var created = await coordinator.Http.PostAsync("api/v1/integrations/home-assistant/credentials", null);
        var login = JsonNode.Parse(await created.Content.ReadAsStringAsync())!;
        var seen = new ConcurrentDictionary<string, string>(StringComparer.Ordinal);
        using var ha = new MqttClientFactory().CreateMqttClient();
        ha.ApplicationMessageReceivedAsync += e =>
        {
            seen[e.ApplicationMessage.Topic] = Encoding.UTF8.GetString(e.ApplicationMessage.Payload);
            return Task.CompletedTask;
        };
        await ha.ConnectAsync(new MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", coordinator.MqttPort)
            .WithCredentials(login["username"]!.GetValue<string>(), login["password"]!.GetValue<string>()).WithProtocolVersion(MqttProtocolVersion.V500).Build());
        await ha.SubscribeAsync("homeassistant/#");
        await Eventually.WaitAsync(() => seen.ContainsKey("homeassistant/sensor/msdfleet_ro-agent/drive0_image/config"), TimeSpan.FromSeconds(30), "read-only image sensor");
        Assert.DoesNotContain(seen.Keys, k => k.StartsWith("homeassistant/select/", StringComparison.Ordinal) || k.StartsWith("homeassistant/button/", StringComparison.Ordinal));
        Assert.DoesNotContain("command_topic", seen["homeassistant/sensor/msdfleet_ro-agent/drive0_image/config"], StringComparison.Ordinal);

        // The broker itself refuses the command (reason 135), so it never reaches the Coordinator.
        var refused = await ha.PublishAsync(new MqttApplicationMessageBuilder().WithTopic($"{coordinator.TopicPrefix}/ha/ro-agent/drive0/image/set").WithPayload("ro.img")
            .WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build());
        Assert.Equal(MqttClientPublishReasonCode.NotAuthorized, refused.ReasonCode);
        Assert.Null((await coordinator.GetAgentAsync("ro-agent"))!["desired"]);
    }
}
