using System.Buffers;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>The embedded broker confines each agent to its own subtree (MQTT v5, QoS 1: a denied publish gets reason 135).</summary>
public sealed class BrokerAclTests
{
    private static async Task<IMqttClient> ConnectAsync(CoordinatorInstance coordinator, string user, string password)
    {
        var client = new MqttClientFactory().CreateMqttClient();
        var result = await client.ConnectAsync(new MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", coordinator.MqttPort)
            .WithClientId(user).WithCredentials(user, password).WithProtocolVersion(MqttProtocolVersion.V500).Build());
        Assert.Equal(MqttClientConnectResultCode.Success, result.ResultCode);
        return client;
    }

    [Fact]
    public async Task AgentB_CannotPublishIntoAgentA_NorSubscribeToIt_NorReachAnySubscriber()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var secretA = await coordinator.CreateAgentSecretAsync("agent-a");
        var secretB = await coordinator.CreateAgentSecretAsync("agent-b");
        using var a = await ConnectAsync(coordinator, "agent-a", secretA);
        using var b = await ConnectAsync(coordinator, "agent-b", secretB);
        var received = new List<string>();
        a.ApplicationMessageReceivedAsync += e =>
        {
            lock (received)
                received.Add(e.ApplicationMessage.Topic);
            return Task.CompletedTask;
        };
        await a.SubscribeAsync($"{coordinator.TopicPrefix}/agents/agent-a/desired", MqttQualityOfServiceLevel.AtLeastOnce);

        var intoA = await b.PublishAsync(new MqttApplicationMessageBuilder().WithTopic($"{coordinator.TopicPrefix}/agents/agent-a/desired")
            .WithPayload([1, 2, 3]).WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build());
        Assert.Equal(MqttClientPublishReasonCode.NotAuthorized, intoA.ReasonCode); // 135
        var ownDesired = await a.PublishAsync(new MqttApplicationMessageBuilder().WithTopic($"{coordinator.TopicPrefix}/agents/agent-a/desired")
            .WithPayload([1]).WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build());
        Assert.Equal(MqttClientPublishReasonCode.NotAuthorized, ownDesired.ReasonCode); // only the Coordinator writes desired state
        var ownReport = await b.PublishAsync(new MqttApplicationMessageBuilder().WithTopic($"{coordinator.TopicPrefix}/agents/agent-b/events")
            .WithPayload([1]).WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build());
        Assert.Equal(MqttClientPublishReasonCode.NoMatchingSubscribers, ownReport.ReasonCode); // allowed, just nobody listening

        var spy = await b.SubscribeAsync($"{coordinator.TopicPrefix}/agents/+/reported", MqttQualityOfServiceLevel.AtLeastOnce);
        Assert.Equal(MqttClientSubscribeResultCode.NotAuthorized, spy.Items.Single().ResultCode);

        // A round trip through the broker after the denied publish: had it been delivered, it would be here by now.
        var probe = await ConnectAsync(coordinator, "agent-a-probe", "x").ContinueWith(t => t.IsFaulted ? null : t.Result, TaskScheduler.Default);
        Assert.Null(probe); // unknown users are refused, too
        await a.PingAsync();
        lock (received)
            Assert.Empty(received);

        using var wrong = new MqttClientFactory().CreateMqttClient();
        var refused = await wrong.ConnectAsync(new MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", coordinator.MqttPort)
            .WithClientId("agent-a").WithCredentials("agent-a", "msda_wrong").WithProtocolVersion(MqttProtocolVersion.V500).Build());
        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, refused.ResultCode);
    }
}
