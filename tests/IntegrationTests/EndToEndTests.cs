using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// The walking skeleton's promise: an uploaded image reaches agent A's LUN as a CD-ROM, bit-identical
/// and read-only, and leaves again with forced_eject, while agent B never changes. Once over the
/// embedded broker and once over a real Mosquitto.
/// </summary>
public sealed class EndToEndTests : IAsyncLifetime
{
    private readonly string _work = TestPaths.NewTempDir("e2e");
    private MosquittoBroker? _mosquitto;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (_mosquitto is not null)
            await _mosquitto.DisposeAsync();
        Directory.Delete(_work, true);
    }

    [Theory]
    [InlineData("embedded")]
    [InlineData("mosquitto")]
    public async Task MountAndEject_OverBroker_ImageArrivesIntactAndOnlyOnAgentA(string broker)
    {
        if (broker == "mosquitto")
            _mosquitto = await MosquittoBroker.StartAsync();
        await using var coordinator = await CoordinatorInstance.StartAsync(_mosquitto?.Url);
        await using var agentA = new AgentProcess("rack1-a", await coordinator.CreateAgentSecretAsync("rack1-a"), coordinator);
        await using var agentB = new AgentProcess("rack1-b", await coordinator.CreateAgentSecretAsync("rack1-b"), coordinator);
        agentA.Start();
        agentB.Start();
        await coordinator.WaitForAgentAsync("rack1-a", a => a["online"]!.GetValue<bool>() && a["drives"] is not null, "online with a report", diagnostics: () => agentA.Log);
        await coordinator.WaitForAgentAsync("rack1-b", b => b["online"]!.GetValue<bool>() && b["drives"] is not null, "online with a report", diagnostics: () => agentB.Log);

        var (path, sha256) = await TestImages.CreateAsync(_work, "installer.iso", 64L * 1024 * 1024 + 12345, seed: 1);
        var upload = await coordinator.UploadAsync("installer.iso", path);
        Assert.Equal(sha256, upload["sha256"]!.GetValue<string>());
        var digest = upload["digest"]!.GetValue<string>();

        using (var set = await coordinator.SetDriveAsync("rack1-a", 0, new { image = "installer.iso", mode = "cdrom" }))
            Assert.True(set.IsSuccessStatusCode, await set.Content.ReadAsStringAsync());

        var attached = await coordinator.WaitForAgentAsync("rack1-a",
            a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == digest && a["appliedGeneration"]!.GetValue<long>() == 1,
            "reports the image attached", diagnostics: () => agentA.Log);
        var drive = CoordinatorInstance.Drive(attached, 0)!;
        Assert.True(drive["connected"]!.GetValue<bool>());
        Assert.Equal("cdrom", drive["mode"]!.GetValue<string>());
        Assert.True(drive["readOnly"]!.GetValue<bool>());

        var lunFile = agentA.Lun("file");
        Assert.Equal(Path.Combine(agentA.StorageRoot, "images"), Path.GetDirectoryName(lunFile));
        Assert.Equal(sha256, TestImages.Sha256Of(lunFile));
        Assert.Equal("1", agentA.Lun("cdrom"));
        Assert.Equal("1", agentA.Lun("ro"));
        Assert.Empty(Directory.GetFiles(Path.Combine(agentA.StorageRoot, "incoming")));

        using (var eject = await coordinator.SetDriveAsync("rack1-a", 0, new { image = "installer.iso", mode = "cdrom", connected = false }))
            Assert.True(eject.IsSuccessStatusCode, await eject.Content.ReadAsStringAsync());
        await coordinator.WaitForAgentAsync("rack1-a",
            a => CoordinatorInstance.Drive(a, 0)?["connected"]?.GetValue<bool>() == false && a["appliedGeneration"]!.GetValue<long>() == 2,
            "reports the drive detached", diagnostics: () => agentA.Log);
        Assert.Equal("1", agentA.Lun("forced_eject"));
        Assert.Equal(string.Empty, agentA.Lun("file"));

        // Agent B was never asked for anything: nothing of it changed.
        Assert.Equal(string.Empty, agentB.Lun("file"));
        Assert.Equal(string.Empty, agentB.Lun("forced_eject"));
        Assert.Equal(string.Empty, agentB.Lun("cdrom"));
        Assert.Empty(Directory.GetFiles(Path.Combine(agentB.StorageRoot, "images")));
        var b = await coordinator.GetAgentAsync("rack1-b");
        Assert.Null(b!["desired"]);
        Assert.Empty(b["cache"]!.AsArray());
        Assert.False(agentA.HasExited);
        Assert.False(agentB.HasExited);
    }
}
