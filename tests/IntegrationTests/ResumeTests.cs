using System.Buffers.Binary;
using MsdFleet.IntegrationTests.Infrastructure;
using MsdFleet.Protocol.Manifests;
using Xunit.Abstractions;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// An agent killed (SIGKILL) in the middle of a pull resumes after restart without fetching again any
/// chunk its journal proves verified, counted in bytes the Coordinator served.
/// </summary>
public sealed class ResumeTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _work = TestPaths.NewTempDir("resume");

    public void Dispose() => Directory.Delete(_work, true);

    [Fact]
    public async Task KilledMidPull_Restarted_FetchesOnlyWhatTheJournalDoesNotProve()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        // Throttled to 16 MiB/s, so a 96 MiB pull takes ~6 s and can be cut in the middle.
        await using var agent = new AgentProcess("resumer", await coordinator.CreateAgentSecretAsync("resumer"), coordinator, maxBytesPerSecond: 16L * 1024 * 1024);
        agent.Start();
        await coordinator.WaitForAgentAsync("resumer", a => a["online"]!.GetValue<bool>(), "online", diagnostics: () => agent.Log);

        const long size = 96L * 1024 * 1024;
        var (path, sha256) = await TestImages.CreateAsync(_work, "big.img", size, seed: 2);
        var digest = (await coordinator.UploadAsync("big.img", path))["digest"]!.GetValue<string>();
        using (var set = await coordinator.SetDriveAsync("resumer", 0, new { image = "big.img", mode = "flash", readOnly = true }))
            Assert.True(set.IsSuccessStatusCode);

        var journalPath = Path.Combine(agent.StorageRoot, "incoming", ImageDigest.Parse(digest).Hex + ".journal");
        await Eventually.WaitAsync(() => coordinator.Counters.ContentBytesServed >= size / 3 && File.Exists(journalPath) && new FileInfo(journalPath).Length > 40,
            TimeSpan.FromSeconds(60), "a third of the image pulled and journaled", () => agent.Log);
        await agent.KillAsync();

        var servedBeforeRestart = coordinator.Counters.ContentBytesServed;
        var manifest = ImageManifest.Parse(await coordinator.Http.GetByteArrayAsync($"api/v1/blobs/{digest}/manifest"));
        var proven = JournaledBytes(journalPath, manifest);
        Assert.True(proven > 0, "the journal proved no chunk before the kill");
        Assert.True(proven < size, "the pull finished before the kill; nothing was tested");
        Assert.Equal(string.Empty, agent.Lun("file")); // nothing half-pulled was attached

        agent.SetEnvironment("Agent__MaxBytesPerSecond", "0");
        agent.Start();
        await coordinator.WaitForAgentAsync("resumer", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == digest,
            "resumed pull attached", diagnostics: () => agent.Log);

        var fetchedAfterRestart = coordinator.Counters.ContentBytesServed - servedBeforeRestart;
        Assert.True(fetchedAfterRestart <= size - proven,
            $"after restart the agent fetched {fetchedAfterRestart} bytes, but only {size - proven} were not yet proven by the journal");
        Assert.Equal(sha256, TestImages.Sha256Of(agent.Lun("file")));
        Assert.False(File.Exists(journalPath));
    }

    [Fact]
    public async Task KilledTwentyTimesAtRandomPoints_EndsBitIdentical_FetchingUnderOnePointOneTimesTheImage()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        // Bytes fetched = bytes delivered to the agent's socket, counted by a proxy with small buffers.
        // Unthrottled: a throttled reader lets kernel socket buffers fill, and those bytes die with the process.
        await using var proxy = new TcpProxy(coordinator.HttpPort, bufferBytes: 64 * 1024);
        await using var agent = new AgentProcess("crashy", await coordinator.CreateAgentSecretAsync("crashy"), coordinator,
            coordinatorUrl: new Uri($"http://127.0.0.1:{proxy.Port}/"));
        const long size = 640L * 1024 * 1024;
        var (path, sha256) = await TestImages.CreateAsync(_work, "crashy.img", size, seed: 7);
        var digest = (await coordinator.UploadAsync("crashy.img", path))["digest"]!.GetValue<string>();
        using (var set = await coordinator.SetDriveAsync("crashy", 0, new { image = "crashy.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);

        var imagePath = Path.Combine(agent.StorageRoot, "images", ImageDigest.Parse(digest).Hex + ".img");
        var random = new Random(20);
        var kills = 0;
        while (kills < 20)
        {
            agent.Start();
            var before = proxy.Delivered;
            var step = random.Next(1, 12) * 1024L * 1024;
            await Eventually.WaitAsync(() => proxy.Delivered >= before + step || agent.HasExited || File.Exists(imagePath),
                TimeSpan.FromSeconds(60), $"progress before kill {kills + 1}", () => agent.Log);
            if (File.Exists(imagePath))
                break; // finished before the kill point: the remaining kills would test nothing
            await agent.KillAsync();
            kills++;
            Assert.Equal(string.Empty, agent.Lun("file")); // never attached half-pulled
        }
        agent.SetEnvironment("Agent__MaxBytesPerSecond", "0");
        if (agent.HasExited)
            agent.Start();
        await coordinator.WaitForAgentAsync("crashy", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == digest,
            "attached after the kills", diagnostics: () => agent.Log);
        Assert.Equal(sha256, TestImages.Sha256Of(agent.Lun("file")));
        var served = proxy.Delivered;
        foreach (var line in agent.Log.Split('\n').Where(l => l.Contains("Resume:", StringComparison.Ordinal) || l.Contains("already verified", StringComparison.Ordinal)))
            output.WriteLine(line);
        output.WriteLine($"{kills} kills; the agent was sent {served} bytes (the Coordinator served {coordinator.Counters.ContentBytesServed}) for a {size}-byte image = {served / (double)size:F3}x");
        Assert.True(kills >= 15, $"only {kills} kills landed before the pull finished");
        Assert.True(served < size * 1.1, $"served {served / (double)size:F3}x the image size");
    }

    private static long JournaledBytes(string journalPath, ImageManifest manifest)
    {
        var bytes = File.ReadAllBytes(journalPath);
        var indexes = new HashSet<int>();
        for (var at = 40; at + 12 <= bytes.Length; at += 12)
            indexes.Add(BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(at)));
        return indexes.Sum(i => (long)manifest.Chunks[i].Length);
    }
}
