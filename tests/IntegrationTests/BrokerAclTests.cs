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
        Assert.Equal(MqttClientPublishReasonCode.Success, ownReport.ReasonCode); // allowed; the Coordinator listens to events (live view)

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

/// <summary>Disabling an agent ends its broker session and refuses its credentials everywhere until it is enabled again.</summary>
public sealed class AgentDisableTests
{
    [Fact]
    public async Task Disable_DisconnectsAndRefuses_EnableRestores()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var secret = await coordinator.CreateAgentSecretAsync("lost-pi");
        MqttClientConnectResultCode Connect(IMqttClient client) => client.ConnectAsync(new MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", coordinator.MqttPort)
            .WithClientId("lost-pi").WithCredentials("lost-pi", secret).WithProtocolVersion(MqttProtocolVersion.V500).Build()).GetAwaiter().GetResult().ResultCode;
        using var session = new MqttClientFactory().CreateMqttClient();
        Assert.Equal(MqttClientConnectResultCode.Success, Connect(session));
        using var http = new HttpClient { BaseAddress = coordinator.BaseUrl };
        http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Basic",
            Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes("lost-pi:" + secret)));
        Assert.Equal(System.Net.HttpStatusCode.OK, (await http.GetAsync("api/v1/signing-key")).StatusCode);

        (await coordinator.Http.PostAsync("api/v1/agents/lost-pi/disable", null)).EnsureSuccessStatusCode();
        await Eventually.WaitAsync(() => !session.IsConnected, TimeSpan.FromSeconds(10), "the broker to end the disabled agent's session");
        using (var again = new MqttClientFactory().CreateMqttClient())
            Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, Connect(again));
        Assert.Equal(System.Net.HttpStatusCode.Unauthorized, (await http.GetAsync("api/v1/signing-key")).StatusCode);
        Assert.DoesNotContain("lost-pi:", await coordinator.Http.GetStringAsync("api/v1/broker/mosquitto/passwords"), StringComparison.Ordinal);

        (await coordinator.Http.PostAsync("api/v1/agents/lost-pi/enable", null)).EnsureSuccessStatusCode();
        using (var back = new MqttClientFactory().CreateMqttClient())
            Assert.Equal(MqttClientConnectResultCode.Success, Connect(back));
        Assert.Equal(System.Net.HttpStatusCode.OK, (await http.GetAsync("api/v1/signing-key")).StatusCode);
    }
}

/// <summary>The same confinement on an external Mosquitto, from the password file and ACL the Coordinator generates.</summary>
public sealed class MosquittoAclTests : IDisposable
{
    private readonly string _work = TestPaths.NewTempDir("mosquitto-acl");

    public void Dispose() => Directory.Delete(_work, true);

    [Fact]
    public async Task GeneratedPasswordFileAndAcl_DenyAnotherAgentsSubtreeWithReason135()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var secretA = await coordinator.CreateAgentSecretAsync("agent-a");
        var secretB = await coordinator.CreateAgentSecretAsync("agent-b");
        var passwords = Path.Combine(_work, "passwords");
        var acl = Path.Combine(_work, "acl");
        await File.WriteAllTextAsync(passwords, await coordinator.Http.GetStringAsync("api/v1/broker/mosquitto/passwords"));
        await File.WriteAllTextAsync(acl, await coordinator.Http.GetStringAsync("api/v1/broker/mosquitto/acl"));
        Assert.DoesNotContain(secretA, await File.ReadAllTextAsync(passwords), StringComparison.Ordinal);
        await using var mosquitto = await MosquittoBroker.StartAsync(passwords, acl);

        async Task<IMqttClient> ConnectAsync(string clientId, string password, string? user = null)
        {
            var client = new MqttClientFactory().CreateMqttClient();
            var result = await client.ConnectAsync(new MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", mosquitto.Port)
                .WithClientId(clientId).WithCredentials(user ?? clientId, password).WithProtocolVersion(MqttProtocolVersion.V500).Build());
            Assert.Equal(MqttClientConnectResultCode.Success, result.ResultCode);
            return client;
        }

        using var a = await ConnectAsync("agent-a", secretA);
        var received = new List<string>();
        a.ApplicationMessageReceivedAsync += e =>
        {
            lock (received)
                received.Add(e.ApplicationMessage.Topic);
            return Task.CompletedTask;
        };
        var prefix = coordinator.TopicPrefix; // the prefix the generated ACL names
        await a.SubscribeAsync($"{prefix}/agents/agent-a/desired", MqttQualityOfServiceLevel.AtLeastOnce);

        // Each attempt on a fresh session: Mosquitto may close a session after a denied publish.
        async Task<MqttClientPublishReasonCode> PublishAsAsync(string user, string password, string topic)
        {
            using var client = await ConnectAsync(user + "-" + Guid.NewGuid().ToString("N")[..6], password, user);
            var result = await client.PublishAsync(new MqttApplicationMessageBuilder().WithTopic(topic)
                .WithPayload([1]).WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build());
            return result.ReasonCode;
        }

        Assert.Equal(MqttClientPublishReasonCode.NotAuthorized, await PublishAsAsync("agent-b", secretB, $"{prefix}/agents/agent-a/desired")); // 135
        Assert.Equal(MqttClientPublishReasonCode.NotAuthorized, await PublishAsAsync("agent-b", secretB, $"{prefix}/agents/agent-a/reported"));
        Assert.Equal(MqttClientPublishReasonCode.NotAuthorized, await PublishAsAsync("agent-a", secretA, $"{prefix}/agents/agent-a/desired"));
        Assert.NotEqual(MqttClientPublishReasonCode.NotAuthorized, await PublishAsAsync("agent-b", secretB, $"{prefix}/agents/agent-b/reported"));
        await a.PingAsync();
        lock (received)
            Assert.Empty(received);

        using var wrong = new MqttClientFactory().CreateMqttClient();
        var refused = await wrong.ConnectAsync(new MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", mosquitto.Port)
            .WithClientId("agent-a2").WithCredentials("agent-a", "msda_wrong").WithProtocolVersion(MqttProtocolVersion.V500).Build());
        Assert.NotEqual(MqttClientConnectResultCode.Success, refused.ResultCode);
    }

    [Fact]
    public async Task OneAclDefinition_TheEmbeddedBrokerAndTheGeneratedMosquittoAcl_AnswerEveryProbeAlike()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var secretB = await coordinator.CreateAgentSecretAsync("agent-b");
        var secretA = await coordinator.CreateAgentSecretAsync("agent-a");
        var passwords = Path.Combine(_work, "passwords");
        var acl = Path.Combine(_work, "acl");
        await File.WriteAllTextAsync(passwords, await coordinator.Http.GetStringAsync("api/v1/broker/mosquitto/passwords"));
        await File.WriteAllTextAsync(acl, await coordinator.Http.GetStringAsync("api/v1/broker/mosquitto/acl"));
        await using var mosquitto = await MosquittoBroker.StartAsync(passwords, acl);
        var prefix = coordinator.TopicPrefix;

        async Task<IMqttClient> ConnectAsync(int port, string clientId, string user = "agent-b")
        {
            var client = new MqttClientFactory().CreateMqttClient();
            var result = await client.ConnectAsync(new MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", port)
                .WithClientId(clientId).WithCredentials(user, user == "agent-a" ? secretA : secretB).WithProtocolVersion(MqttProtocolVersion.V500).Build());
            Assert.Equal(MqttClientConnectResultCode.Success, result.ResultCode);
            return client;
        }
        // The embedded broker insists on client id = agent id; Mosquitto's pattern rules use the user name.
        string ClientId(int port, string user) => port == coordinator.MqttPort ? user : user + "-" + Guid.NewGuid().ToString("N")[..6];
        async Task<bool> MayPublishAsync(int port, string topic)
        {
            using var client = await ConnectAsync(port, ClientId(port, "agent-b"));
            var result = await client.PublishAsync(new MqttApplicationMessageBuilder().WithTopic(topic).WithPayload([1])
                .WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build());
            return result.ReasonCode != MqttClientPublishReasonCode.NotAuthorized;
        }
        // Read access: refused at subscribe (the embedded broker), or granted with nothing delivered (Mosquitto checks
        // read access per message): a writer allowed to publish there does, then a ping round trip on the reader.
        async Task<bool> MayReadAsync(int port, string filter, string? writer, string? topic)
        {
            using var reader = await ConnectAsync(port, ClientId(port, "agent-b"));
            var received = 0;
            reader.ApplicationMessageReceivedAsync += _ =>
            {
                Interlocked.Increment(ref received);
                return Task.CompletedTask;
            };
            var result = await reader.SubscribeAsync(filter, MqttQualityOfServiceLevel.AtLeastOnce);
            if (result.Items.Single().ResultCode == MqttClientSubscribeResultCode.NotAuthorized)
                return false;
            if (writer is null)
                return true;
            using var writing = writer == "agent-b" ? null : await ConnectAsync(port, ClientId(port, writer), writer);
            var sent = await (writing ?? reader).PublishAsync(new MqttApplicationMessageBuilder().WithTopic(topic).WithPayload([2])
                .WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build());
            Assert.NotEqual(MqttClientPublishReasonCode.NotAuthorized, sent.ReasonCode);
            await reader.PingAsync();
            return Volatile.Read(ref received) > 0;
        }

        (string Topic, bool Allowed)[] publishes =
        [
            ($"{prefix}/agents/agent-b/status", true), ($"{prefix}/agents/agent-b/reported", true), ($"{prefix}/agents/agent-b/events", true),
            ($"{prefix}/agents/agent-b/desired", false), ($"{prefix}/agents/agent-b/anything", false), ($"{prefix}/agents/agent-b/status/deeper", false),
            ($"{prefix}/agents/agent-a/status", false), ($"{prefix}/agents/agent-a/reported", false), ($"{prefix}/ha/agent-b/0/mount/set", false),
            ("elsewhere/agents/agent-b/status", false),
        ];
        (string Filter, string? Writer, string? Topic, bool Allowed)[] reads =
        [
            ($"{prefix}/agents/agent-b/desired", null, null, true),
            ($"{prefix}/agents/agent-a/reported", "agent-a", $"{prefix}/agents/agent-a/reported", false),
            ($"{prefix}/agents/+/reported", "agent-a", $"{prefix}/agents/agent-a/reported", false),
            ($"{prefix}/agents/agent-b/#", "agent-b", $"{prefix}/agents/agent-b/events", false),
            ("#", "agent-a", $"{prefix}/agents/agent-a/status", false),
        ];
        foreach (var (topic, allowed) in publishes)
        {
            Assert.True(allowed == await MayPublishAsync(coordinator.MqttPort, topic), $"embedded broker, publish {topic}: expected {(allowed ? "allowed" : "refused")}");
            Assert.True(allowed == await MayPublishAsync(mosquitto.Port, topic), $"Mosquitto with the generated ACL, publish {topic}: expected {(allowed ? "allowed" : "refused")}");
        }
        foreach (var (filter, writer, topic, allowed) in reads)
        {
            Assert.True(allowed == await MayReadAsync(coordinator.MqttPort, filter, writer, topic), $"embedded broker, read {filter}: expected {(allowed ? "allowed" : "refused")}");
            Assert.True(allowed == await MayReadAsync(mosquitto.Port, filter, writer, topic), $"Mosquitto with the generated ACL, read {filter}: expected {(allowed ? "allowed" : "refused")}");
        }
    }
}
