using System.Collections.Concurrent;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// MQTT v5 message expiry where it makes the protocol safer, seen through a real Mosquitto: an agent's
/// events (progress, errors) carry an expiry so a late subscriber never takes stale progress for news,
/// while its retained report, the current truth, does not expire.
/// </summary>
public sealed class MessageExpiryTests : IAsyncLifetime
{
    private readonly string _work = TestPaths.NewTempDir("expiry");

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        Directory.Delete(_work, true);
        return Task.CompletedTask;
    }

    [Fact]
    public async Task Events_CarryMessageExpiry_ReportsDoNot()
    {
        await using var mosquitto = await MosquittoBroker.StartAsync();
        await using var coordinator = await CoordinatorInstance.StartAsync(mosquitto.Url);
        var seen = new ConcurrentQueue<MqttApplicationMessage>();
        using var listener = new MqttClientFactory().CreateMqttClient();
        listener.ApplicationMessageReceivedAsync += e =>
        {
            seen.Enqueue(e.ApplicationMessage);
            return Task.CompletedTask;
        };
        await listener.ConnectAsync(new MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", mosquitto.Port).WithProtocolVersion(MqttProtocolVersion.V500).Build());
        await listener.SubscribeAsync(new MqttClientSubscribeOptionsBuilder()
            .WithTopicFilter($"{coordinator.TopicPrefix}/agents/+/events", MqttQualityOfServiceLevel.AtLeastOnce)
            .WithTopicFilter($"{coordinator.TopicPrefix}/agents/+/reported", MqttQualityOfServiceLevel.AtLeastOnce).Build());

        await using var agent = new AgentProcess("expiring", await coordinator.CreateAgentSecretAsync("expiring"), coordinator);
        agent.Start();
        await coordinator.WaitForAgentAsync("expiring", a => a["online"]!.GetValue<bool>() && a["drives"] is not null, "online", diagnostics: () => agent.Log);
        var (path, _) = await TestImages.CreateAsync(_work, "e.img", 8L * 1024 * 1024, seed: 3);
        await coordinator.UploadAsync("e.img", path);
        (await coordinator.SetDriveAsync("expiring", 0, new { image = "e.img", mode = "flash" })).EnsureSuccessStatusCode();
        await Eventually.WaitAsync(() => seen.Any(m => m.Topic.EndsWith("/events", StringComparison.Ordinal)),
            TimeSpan.FromSeconds(60), "an event from the agent", () => agent.Log);

        var events = seen.Where(m => m.Topic.EndsWith("/events", StringComparison.Ordinal)).ToList();
        Assert.All(events, e => Assert.InRange(e.MessageExpiryInterval, 1u, 120u));
        var reports = seen.Where(m => m.Topic.EndsWith("/reported", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(reports);
        Assert.All(reports, r => Assert.Equal(0u, r.MessageExpiryInterval));
    }
}
