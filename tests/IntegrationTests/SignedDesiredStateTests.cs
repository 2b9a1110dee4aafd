using System.Buffers;
using System.Security.Cryptography;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;
using MsdFleet.Coordinator.Auth;
using MsdFleet.IntegrationTests.Infrastructure;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Serialization;
using MsdFleet.Protocol.Signing;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// A running agent accepts only desired state signed by the Coordinator key it pinned, addressed to it,
/// and newer than what it applied: forged, unsigned, replayed and misaddressed states are rejected and
/// reported, and its drives do not change. Over a real Mosquitto where anyone may publish.
/// </summary>
public sealed class SignedDesiredStateTests : IDisposable
{
    private readonly string _work = TestPaths.NewTempDir("signed");

    public void Dispose() => Directory.Delete(_work, true);

    [Fact]
    public async Task ForgedUnsignedReplayedAndMisaddressedStates_RejectedAndReported_DrivesUnchanged()
    {
        await using var mosquitto = await MosquittoBroker.StartAsync();
        await using var coordinator = await CoordinatorInstance.StartAsync(mosquitto.Url);
        await using var agent = new AgentProcess("guarded", await coordinator.CreateAgentSecretAsync("guarded"), coordinator);
        agent.Start();
        var (v1, _) = await TestImages.CreateAsync(_work, "v1.img", 2 * 1024 * 1024, seed: 51);
        var (v2, v2Sha) = await TestImages.CreateAsync(_work, "v2.img", 2 * 1024 * 1024, seed: 52);
        var d1 = (await coordinator.UploadAsync("v1.img", v1))["digest"]!.GetValue<string>();
        var d2 = (await coordinator.UploadAsync("v2.img", v2))["digest"]!.GetValue<string>();
        var topic = $"{coordinator.TopicPrefix}/agents/guarded/desired";

        using var attacker = new MqttClientFactory().CreateMqttClient();
        await attacker.ConnectAsync(new MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", mosquitto.Port).WithProtocolVersion(MqttProtocolVersion.V500).Build());
        byte[]? captured = null;
        attacker.ApplicationMessageReceivedAsync += e =>
        {
            captured ??= e.ApplicationMessage.Payload.ToArray();
            return Task.CompletedTask;
        };

        using (var set = await coordinator.SetDriveAsync("guarded", 0, new { image = "v1.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);
        await attacker.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);
        await Eventually.WaitAsync(() => captured is not null, TimeSpan.FromSeconds(10), "the signed generation 1 on the wire");
        await attacker.UnsubscribeAsync(topic);
        using (var set = await coordinator.SetDriveAsync("guarded", 0, new { image = "v2.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);
        await coordinator.WaitForAgentAsync("guarded", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == d2 && a["appliedGeneration"]!.GetValue<long>() == 2,
            "v2 attached", diagnostics: () => agent.Log);

        var evil = new DesiredState
        {
            Generation = 1000,
            AgentId = "guarded",
            Drives = [new DesiredDrive { Index = 0, ImageDigest = d1, Mode = DriveMode.Flash, Connected = true }],
        };
        using var attackerKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var coordinatorKey = await ((SigningKeyStore)coordinator.Services.GetService(typeof(SigningKeyStore))!).GetAsync(CancellationToken.None);
        var attempts = new (string Name, byte[] Payload, string Reason)[]
        {
            ("forged", DesiredStateSigning.Sign(evil, attackerKey), "not the pinned Coordinator key"),
            ("unsigned", ProtocolSerializer.Serialize(evil), "not a signed desired state"),
            ("replayed", captured!, "older than the applied generation"),
            ("misaddressed", DesiredStateSigning.Sign(evil with { AgentId = "someone-else" }, coordinatorKey), "addressed to agent 'someone-else'"),
        };
        foreach (var (name, payload, reason) in attempts)
        {
            await attacker.PublishAsync(new MqttApplicationMessageBuilder().WithTopic(topic).WithPayload(payload)
                .WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build());
            var report = await coordinator.WaitForAgentAsync("guarded", a => a["lastError"]?.GetValue<string>()?.Contains(reason, StringComparison.Ordinal) == true,
                $"the {name} state reported as rejected", TimeSpan.FromSeconds(20), () => agent.Log);
            Assert.Equal(d2, CoordinatorInstance.Drive(report, 0)!["image"]!.GetValue<string>());
            Assert.Equal(2, report["appliedGeneration"]!.GetValue<long>());
        }
        Assert.Equal(v2Sha, TestImages.Sha256Of(agent.Lun("file")));
    }
}
