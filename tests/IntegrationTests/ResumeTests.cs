using System.Buffers.Binary;
using MsdFleet.IntegrationTests.Infrastructure;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// An agent killed (SIGKILL) in the middle of a pull resumes after restart without fetching again any
/// chunk its journal proves verified, counted in bytes the Coordinator served.
/// </summary>
public sealed class ResumeTests : IDisposable
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

    private static long JournaledBytes(string journalPath, ImageManifest manifest)
    {
        var bytes = File.ReadAllBytes(journalPath);
        var indexes = new HashSet<int>();
        for (var at = 40; at + 12 <= bytes.Length; at += 12)
            indexes.Add(BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(at)));
        return indexes.Sum(i => (long)manifest.Chunks[i].Length);
    }
}
