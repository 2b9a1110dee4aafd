using System.Net;
using Xunit.Abstractions;
using System.Text.Json.Nodes;
using MsdFleet.Coordinator.Storage;
using MsdFleet.IntegrationTests.Infrastructure;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.IntegrationTests;

/// <summary>Dedup across versions, media detection, and garbage collection under concurrency.</summary>
public sealed class CatalogStorageTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _work = TestPaths.NewTempDir("catalog-storage");

    public void Dispose() => Directory.Delete(_work, true);

    [Fact]
    public async Task SecondVersionOfIso_StoresAtMostTwentyPercentNewBytes()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var random = new Random(31);
        var tree = Path.Combine(_work, "tree");
        Directory.CreateDirectory(tree);
        var files = new List<(string Path, int Size)>();
        long total = 0;
        for (var i = 0; total < 96L * 1024 * 1024; i++)
        {
            var size = random.Next(256 * 1024, 8 * 1024 * 1024);
            var file = Path.Combine(tree, $"pkg{i:D3}.deb");
            var bytes = new byte[size];
            random.NextBytes(bytes);
            await File.WriteAllBytesAsync(file, bytes);
            files.Add((file, size));
            total += size;
        }
        var v1 = Path.Combine(_work, "v1.iso");
        await IsoBuilder.BuildAsync(tree, v1);
        // v2: replace files amounting to ~10 % of the bytes with new content, as a point release does.
        long replaced = 0;
        foreach (var (file, size) in files.OrderBy(_ => random.Next()))
        {
            if (replaced + size > total / 10 + 256 * 1024)
                continue;
            var bytes = new byte[size];
            random.NextBytes(bytes);
            await File.WriteAllBytesAsync(file, bytes);
            replaced += size;
        }
        var v2 = Path.Combine(_work, "v2.iso");
        await IsoBuilder.BuildAsync(tree, v2);

        var first = await coordinator.UploadAsync("distro-1.0.iso", v1);
        var second = await coordinator.UploadAsync("distro-1.1.iso", v2);
        var v2Size = second["size"]!.GetValue<long>();
        var newBytes = second["newBytes"]!.GetValue<long>();
        var fraction = newBytes / (double)v2Size;
        output.WriteLine($"v1 {first["size"]} bytes; v2 {v2Size} bytes with {replaced} bytes of files replaced; v2 stored {newBytes} new bytes = {fraction:P1} of its size");
        Assert.True(fraction <= 0.20, $"v2 stored {fraction:P1} of its size as new bytes");
        Assert.Equal("iso9660", second["media"]!["format"]!.GetValue<string>());
        Assert.Equal("cdrom", second["media"]!["suggestedMode"]!.GetValue<string>());
        Assert.Equal("MSDFLEET_TEST", second["media"]!["volumeLabel"]!.GetValue<string>());
        Assert.Equal(TestImages.Sha256Of(v2), Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(await coordinator.Http.GetByteArrayAsync("api/v1/images/distro-1.1.iso"))));
    }

    [Fact]
    public async Task MediaDetection_BiosUefiHybridAndRaw()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var tree = Path.Combine(_work, "boot-tree");
        Directory.CreateDirectory(Path.Combine(tree, "boot"));
        await File.WriteAllBytesAsync(Path.Combine(tree, "boot", "bios.img"), new byte[4 * 2048]);
        await File.WriteAllBytesAsync(Path.Combine(tree, "boot", "efi.img"), new byte[720 * 1024]);
        var iso = Path.Combine(_work, "boot.iso");
        await IsoBuilder.BuildAsync(tree, iso, "-b", "boot/bios.img", "-no-emul-boot", "-boot-load-size", "4",
            "-eltorito-alt-boot", "-e", "boot/efi.img", "-no-emul-boot", "--protective-msdos-label");
        var media = (await coordinator.UploadAsync("boot.iso", iso))["media"]!;
        Assert.Equal("iso9660", media["format"]!.GetValue<string>());
        Assert.True(media["bootBios"]!.GetValue<bool>());
        Assert.True(media["bootUefi"]!.GetValue<bool>());
        Assert.Equal("mbr", media["partitionTable"]!.GetValue<string>());
        Assert.True(media["hybrid"]!.GetValue<bool>());
        Assert.Equal("cdrom", media["suggestedMode"]!.GetValue<string>());

        var plain = Path.Combine(_work, "plain.iso");
        Directory.CreateDirectory(Path.Combine(_work, "plain"));
        await File.WriteAllTextAsync(Path.Combine(_work, "plain", "readme.txt"), "hello");
        await IsoBuilder.BuildAsync(Path.Combine(_work, "plain"), plain);
        var plainMedia = (await coordinator.UploadAsync("plain.iso", plain))["media"]!;
        Assert.False(plainMedia["bootBios"]!.GetValue<bool>());
        Assert.False(plainMedia["hybrid"]!.GetValue<bool>());

        var (raw, _) = await TestImages.CreateAsync(_work, "disk.img", 1024 * 1024, seed: 5);
        var rawMedia = (await coordinator.UploadAsync("disk.img", raw))["media"]!;
        Assert.Equal("raw", rawMedia["format"]!.GetValue<string>());
        Assert.Equal("flash", rawMedia["suggestedMode"]!.GetValue<string>());

        var list = JsonNode.Parse(await coordinator.Http.GetStringAsync("api/v1/images"))!.AsArray();
        Assert.Equal("iso9660", list.First(e => e!["name"]!.GetValue<string>() == "boot.iso")!["media"]!["format"]!.GetValue<string>());
    }

    [Fact]
    public async Task Gc_WithConcurrentUploadsAndDeletes_RemainingImagesIntactAndNoUnreferencedChunks()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        // Images share chunks: each is a base block plus its own tail, so deletes leave packs partly dead.
        var (shared, _) = await TestImages.CreateAsync(_work, "shared.bin", 6 * 1024 * 1024, seed: 100);
        var sharedBytes = await File.ReadAllBytesAsync(shared);
        var images = new Dictionary<string, string>();
        for (var i = 0; i < 8; i++)
        {
            var (tail, _) = await TestImages.CreateAsync(_work, $"tail{i}.bin", 3 * 1024 * 1024 + i, seed: 200 + i);
            var path = Path.Combine(_work, $"img{i}.img");
            await File.WriteAllBytesAsync(path, [.. sharedBytes, .. await File.ReadAllBytesAsync(tail)]);
            images[$"img{i}.img"] = path;
        }
        foreach (var name in new[] { "img0.img", "img1.img", "img2.img", "img3.img" })
            await coordinator.UploadAsync(name, images[name]);

        // Uploads of 4..7, deletes of 0..2 and three GC runs, all at once.
        var work = new List<Task>();
        foreach (var name in new[] { "img4.img", "img5.img", "img6.img", "img7.img" })
            work.Add(coordinator.UploadAsync(name, images[name]));
        foreach (var name in new[] { "img0.img", "img1.img", "img2.img" })
            work.Add(Task.Run(async () => (await coordinator.Http.DeleteAsync($"api/v1/images/{name}")).EnsureSuccessStatusCode()));
        for (var i = 0; i < 3; i++)
            work.Add(Task.Run(async () => (await coordinator.Http.PostAsync("api/v1/gc", null)).EnsureSuccessStatusCode()));
        await Task.WhenAll(work);
        using (var gc = await coordinator.Http.PostAsync("api/v1/gc", null))
            output.WriteLine("final GC: " + await gc.Content.ReadAsStringAsync());

        foreach (var name in new[] { "img3.img", "img4.img", "img5.img", "img6.img", "img7.img" })
        {
            var bytes = await coordinator.Http.GetByteArrayAsync($"api/v1/images/{name}");
            Assert.Equal(TestImages.Sha256Of(images[name]), Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes)));
        }
        foreach (var name in new[] { "img0.img", "img1.img", "img2.img" })
            Assert.Equal(HttpStatusCode.NotFound, (await coordinator.Http.GetAsync($"api/v1/images/{name}")).StatusCode);

        // Every stored chunk is referenced by a remaining image, and nothing else is left behind.
        var chunks = (ChunkStore)coordinator.Services.GetService(typeof(ChunkStore))!;
        var catalog = (MsdFleet.Coordinator.Catalog.ImageCatalog)coordinator.Services.GetService(typeof(MsdFleet.Coordinator.Catalog.ImageCatalog))!;
        var referenced = new HashSet<string>();
        foreach (var entry in await catalog.ListAsync(CancellationToken.None))
            foreach (var chunk in (await catalog.GetManifestAsync(ImageDigest.Parse(entry.Digest), CancellationToken.None))!.Chunks)
                referenced.Add(chunk.IdHex);
        var stored = chunks.SnapshotPacks().Values.SelectMany(p => p.Entries).Select(e => Convert.ToHexStringLower(e.Id)).ToList();
        Assert.Empty(stored.Except(referenced));
        Assert.Equal(stored.Count, stored.Distinct().Count());
        Assert.Subset(stored.ToHashSet(), referenced);
        var store = Path.Combine(coordinator.DataDir, "store");
        Assert.Equal(5, Directory.GetFiles(Path.Combine(store, "manifests", "sha256")).Length);
        var packFiles = Directory.GetFiles(Path.Combine(store, "packs"));
        Assert.Equal(packFiles.Count(f => f.EndsWith(".idx", StringComparison.Ordinal)) * 2, packFiles.Length);
    }

    [Fact]
    public async Task Gc_RequestedWhileAnUploadIsPaused_WaitsForItsCatalogEntry_AndKeepsTheImage()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var (path, sha256) = await TestImages.CreateAsync(_work, "paused.img", 12 * 1024 * 1024 + 77, seed: 300);
        var bytes = await File.ReadAllBytesAsync(path);
        // The body stops after 8 MiB (packs already written) until the test lets it go on.
        var resume = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var paused = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var content = new PausingContent(bytes, 8 * 1024 * 1024, paused, resume.Task);
        var upload = coordinator.Http.PutAsync("api/v1/images/paused.img", content);
        await paused.Task.WaitAsync(TimeSpan.FromSeconds(30));
        var gate = (StoreGate)coordinator.Services.GetService(typeof(StoreGate))!;
        await Eventually.WaitAsync(() => gate.SharedHolders == 1, TimeSpan.FromSeconds(30), "the paused upload to hold the store");

        var gc = coordinator.Http.PostAsync("api/v1/gc", null);
        await Eventually.WaitAsync(() => gate.ExclusiveWaiting, TimeSpan.FromSeconds(30), "the GC to wait for the store");
        Assert.False(gc.IsCompleted, "GC ran while an upload that will reference its chunks was still in flight");
        Assert.Equal(1, gate.SharedHolders);
        resume.SetResult();
        using (var uploaded = await upload)
            Assert.True(uploaded.IsSuccessStatusCode, await uploaded.Content.ReadAsStringAsync());
        using (var collected = await gc)
            collected.EnsureSuccessStatusCode();
        // And once more with nothing in flight: the new image is referenced, so nothing of it may go.
        (await coordinator.Http.PostAsync("api/v1/gc", null)).EnsureSuccessStatusCode();
        var downloaded = await coordinator.Http.GetByteArrayAsync("api/v1/images/paused.img");
        Assert.Equal(sha256, Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(downloaded)));
    }

    /// <summary>A request body that stops after <c>pauseAt</c> bytes until <c>resume</c> completes.</summary>
    private sealed class PausingContent(byte[] data, int pauseAt, TaskCompletionSource paused, Task resume) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            await stream.WriteAsync(data.AsMemory(0, pauseAt));
            await stream.FlushAsync();
            paused.TrySetResult();
            await resume;
            await stream.WriteAsync(data.AsMemory(pauseAt));
        }

        protected override bool TryComputeLength(out long length)
        {
            length = data.Length;
            return true;
        }
    }
}
