using MsdFleet.IntegrationTests.Infrastructure;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.IntegrationTests;

/// <summary>The agent's managed cache: quota, LRU eviction of what is neither attached nor desired, verify before attach.</summary>
public sealed class CacheTests : IDisposable
{
    private readonly string _work = TestPaths.NewTempDir("cache");

    public void Dispose() => Directory.Delete(_work, true);

    private static string ImageFile(AgentProcess agent, string digest) =>
        Path.Combine(agent.StorageRoot, "images", ImageDigest.Parse(digest).Hex + ".img");

    [Fact]
    public async Task Quota_EvictsLeastRecentlyUsedUnattached_AndReportsWhenNothingFits()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        await using var agent = new AgentProcess("cached", await coordinator.CreateAgentSecretAsync("cached"), coordinator, luns: 2);
        agent.SetEnvironment("Agent__CacheQuotaBytes", (26L * 1024 * 1024).ToString(System.Globalization.CultureInfo.InvariantCulture));
        agent.Start();
        var digests = new Dictionary<string, string>();
        foreach (var (name, size, seed) in new[] { ("a.img", 8, 1), ("b.img", 8, 2), ("c.img", 8, 3), ("d.img", 8, 4), ("huge.img", 40, 5) })
        {
            var (path, _) = await TestImages.CreateAsync(_work, name, size * 1024L * 1024, seed);
            digests[name] = (await coordinator.UploadAsync(name, path))["digest"]!.GetValue<string>();
        }

        async Task MountAsync(int drive, string name)
        {
            using (var set = await coordinator.SetDriveAsync("cached", drive, new { image = name, mode = "flash" }))
                Assert.True(set.IsSuccessStatusCode);
            await coordinator.WaitForAgentAsync("cached", a => CoordinatorInstance.Drive(a, drive)?["image"]?.GetValue<string>() == digests[name],
                $"{name} attached on drive {drive}", diagnostics: () => agent.Log);
        }

        await MountAsync(1, "a.img");   // stays attached on drive 1 the whole time
        await MountAsync(0, "b.img");
        await MountAsync(0, "c.img");   // 24 MiB cached: a (attached), b (unused now), c
        await MountAsync(0, "d.img");   // needs 8 more: b, the least recently used unattached image, goes
        Assert.False(File.Exists(ImageFile(agent, digests["b.img"])), "b.img should have been evicted");
        Assert.True(File.Exists(ImageFile(agent, digests["a.img"])), "the attached a.img must never be evicted");
        Assert.True(File.Exists(ImageFile(agent, digests["c.img"])));

        using (var set = await coordinator.SetDriveAsync("cached", 0, new { image = "huge.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);
        var report = await coordinator.WaitForAgentAsync("cached", a => a["lastError"]?.GetValue<string>()?.Contains("Not enough space", StringComparison.Ordinal) == true,
            "a clear out-of-space report", diagnostics: () => agent.Log);
        var error = report["lastError"]!.GetValue<string>();
        Assert.Contains($"needs {40L * 1024 * 1024} bytes", error, StringComparison.Ordinal);
        Assert.Contains("evictable", error, StringComparison.Ordinal);
        Assert.True(File.Exists(ImageFile(agent, digests["a.img"])));
        Assert.Equal(ImageFile(agent, digests["a.img"]), File.ReadAllText(Path.Combine(Path.GetDirectoryName(agent.LunPath)!, "lun.1", "file")).Trim());
    }

    [Fact]
    public async Task CorruptCachedImage_QuarantinedAndPulledAgain_NeverAttached()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        await using var agent = new AgentProcess("rotting", await coordinator.CreateAgentSecretAsync("rotting"), coordinator);
        agent.SetEnvironment("Agent__VerifyBeforeAttach", "full");
        agent.Start();
        var (path, sha256) = await TestImages.CreateAsync(_work, "rot.img", 6L * 1024 * 1024, seed: 9);
        var digest = (await coordinator.UploadAsync("rot.img", path))["digest"]!.GetValue<string>();
        using (var set = await coordinator.SetDriveAsync("rotting", 0, new { image = "rot.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);
        await coordinator.WaitForAgentAsync("rotting", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == digest, "attached", diagnostics: () => agent.Log);
        using (var eject = await coordinator.SetDriveAsync("rotting", 0, new { image = "rot.img", mode = "flash", connected = false }))
            Assert.True(eject.IsSuccessStatusCode);
        await coordinator.WaitForAgentAsync("rotting", a => CoordinatorInstance.Drive(a, 0)?["connected"]?.GetValue<bool>() == false, "detached", diagnostics: () => agent.Log);

        // Bit rot while the image sits in the cache.
        await using (var file = new FileStream(ImageFile(agent, digest), FileMode.Open, FileAccess.ReadWrite))
        {
            file.Position = 3 * 1024 * 1024;
            var b = file.ReadByte();
            file.Position = 3 * 1024 * 1024;
            file.WriteByte((byte)(b ^ 0xFF));
        }
        var servedBefore = coordinator.Counters.ContentBytesServed;
        using (var again = await coordinator.SetDriveAsync("rotting", 0, new { image = "rot.img", mode = "flash" }))
            Assert.True(again.IsSuccessStatusCode);
        await coordinator.WaitForAgentAsync("rotting", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == digest && a["appliedGeneration"]!.GetValue<long>() == 3,
            "re-pulled and attached", diagnostics: () => agent.Log);
        Assert.Equal(sha256, TestImages.Sha256Of(agent.Lun("file")));
        Assert.Single(Directory.GetFiles(Path.Combine(agent.StorageRoot, "quarantine")));
        Assert.Contains("failed verification before attach", agent.Log, StringComparison.Ordinal);
        Assert.True(coordinator.Counters.ContentBytesServed > servedBefore, "the corrupt image was not pulled again");
    }
}
