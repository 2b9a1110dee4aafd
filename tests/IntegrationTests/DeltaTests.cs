using MsdFleet.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace MsdFleet.IntegrationTests;

/// <summary>Delta from anything local: a new version fetches only chunks no cached image holds; zeros are never fetched.</summary>
public sealed class DeltaTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _work = TestPaths.NewTempDir("delta");

    public void Dispose() => Directory.Delete(_work, true);

    [Fact]
    public async Task SecondVersion_FetchesOnlyChunksNotCachedLocally_AndZerosNotAtAll()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        await using var agent = new AgentProcess("delta", await coordinator.CreateAgentSecretAsync("delta"), coordinator);
        agent.Start();
        var random = new Random(88);
        var v1 = new byte[48 * 1024 * 1024];
        random.NextBytes(v1);
        Array.Clear(v1, 16 * 1024 * 1024, 12 * 1024 * 1024); // a 12 MiB run of zeros, as in a raw disk image
        var v2 = v1.ToArray();
        random.NextBytes(v2.AsSpan(36 * 1024 * 1024, 4 * 1024 * 1024)); // ~8 % of the bytes change
        var v2Grown = v2.Take(5_000_000).Concat(new byte[] { 1, 2, 3 }).Concat(v2.Skip(5_000_000)).ToArray(); // and an insertion
        await File.WriteAllBytesAsync(Path.Combine(_work, "v1.img"), v1);
        await File.WriteAllBytesAsync(Path.Combine(_work, "v2.img"), v2Grown);

        var d1 = (await coordinator.UploadAsync("os-v1.img", Path.Combine(_work, "v1.img")))["digest"]!.GetValue<string>();
        var up2 = await coordinator.UploadAsync("os-v2.img", Path.Combine(_work, "v2.img"));
        var d2 = up2["digest"]!.GetValue<string>();
        var newInV2 = up2["newBytes"]!.GetValue<long>();

        using (var set = await coordinator.SetDriveAsync("delta", 0, new { image = "os-v1.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);
        await coordinator.WaitForAgentAsync("delta", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == d1, "v1 attached", diagnostics: () => agent.Log);
        var coldServed = coordinator.Counters.ContentBytesServed;
        Assert.True(coldServed <= v1.Length - 11 * 1024 * 1024, $"cold pull fetched {coldServed} bytes although 12 MiB are zeros");

        using (var set = await coordinator.SetDriveAsync("delta", 0, new { image = "os-v2.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);
        await coordinator.WaitForAgentAsync("delta", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == d2, "v2 attached", diagnostics: () => agent.Log);
        var deltaServed = coordinator.Counters.ContentBytesServed - coldServed;
        output.WriteLine($"v2 is {v2Grown.Length} bytes; {newInV2} bytes are in no v1 chunk; the agent fetched {deltaServed}");
        Assert.True(deltaServed <= newInV2, $"delta pull fetched {deltaServed} bytes, more than the {newInV2} bytes v1 does not have");
        Assert.Equal(TestImages.Sha256Of(Path.Combine(_work, "v2.img")), TestImages.Sha256Of(agent.Lun("file")));
        Assert.Contains("copied from cached images", agent.Log, StringComparison.Ordinal);
    }
}
