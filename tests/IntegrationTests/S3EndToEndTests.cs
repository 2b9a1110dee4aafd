using MsdFleet.Coordinator;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>The Coordinator on a real S3 server (Swift): agents pull straight from S3 with presigned URLs.</summary>
[Collection(SwiftCollection.Name)]
public sealed class S3EndToEndTests(SwiftServer swift) : IDisposable
{
    private readonly string _work = TestPaths.NewTempDir("s3-e2e");

    public void Dispose() => Directory.Delete(_work, true);

    [Fact]
    public async Task Mount_OnS3Backend_AgentPullsFromS3NotThroughCoordinator()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync(storage: swift.Options());
        await using var agent = new AgentProcess("s3-agent", await coordinator.CreateAgentSecretAsync("s3-agent"), coordinator);
        agent.Start();
        var (path, sha256) = await TestImages.CreateAsync(_work, "s3.img", 40L * 1024 * 1024 + 5, seed: 21);
        var digest = (await coordinator.UploadAsync("s3.img", path))["digest"]!.GetValue<string>();
        using (var set = await coordinator.SetDriveAsync("s3-agent", 0, new { image = "s3.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);
        await coordinator.WaitForAgentAsync("s3-agent", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == digest,
            "attached from S3", diagnostics: () => agent.Log);
        Assert.Equal(sha256, TestImages.Sha256Of(agent.Lun("file")));
        Assert.Equal(0, coordinator.Counters.ContentBytesServed); // every byte came from S3

        // The catalog survives a restart on S3 too (its state lives in the bucket).
        await coordinator.RestartAsync();
        var whole = await coordinator.Http.GetByteArrayAsync("api/v1/images/s3.img");
        Assert.Equal(sha256, Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(whole)));
    }

    [Fact]
    public async Task PublicEndpoint_AgentsGetUrlsForTheHostTheyReach_TheCoordinatorKeepsItsOwn()
    {
        // The agents' way to the S3 server (a proxy standing in for an ingress) differs from the Coordinator's.
        await using var ingress = new TcpProxy(swift.Port);
        var storage = swift.Options();
        await using var coordinator = await CoordinatorInstance.StartAsync(storage: storage,
            extraArgs: [$"--Storage:S3:PublicEndpoint=http://127.0.0.1:{ingress.Port}"]);
        var (path, sha256) = await TestImages.CreateAsync(_work, "pub.img", 6L * 1024 * 1024 + 3, seed: 23);
        var digest = (await coordinator.UploadAsync("pub.img", path))["digest"]!.GetValue<string>();
        Assert.True(ingress.Delivered < 64 * 1024, $"the upload went through the agents' endpoint ({ingress.Delivered} bytes)");

        await using var agent = new AgentProcess("pub-agent", await coordinator.CreateAgentSecretAsync("pub-agent"), coordinator);
        agent.Start();
        using (var set = await coordinator.SetDriveAsync("pub-agent", 0, new { image = "pub.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);
        await coordinator.WaitForAgentAsync("pub-agent", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == digest,
            "attached through the public endpoint", diagnostics: () => agent.Log);
        Assert.Equal(sha256, TestImages.Sha256Of(agent.Lun("file")));
        Assert.True(ingress.Delivered >= 6L * 1024 * 1024, $"the agent's pulls went through the public endpoint ({ingress.Delivered} bytes)");
        Assert.Equal(0, coordinator.Counters.ContentBytesServed);
    }

    [Fact]
    public async Task Start_WrongS3Secret_FailsWithMessageNamingTheSetting()
    {
        var options = swift.Options(secret: "not-the-secret");
        var app = CoordinatorApp.Build([$"--Urls=http://127.0.0.1:{TestPaths.FreePort()}", $"--Mqtt:EmbeddedPort={TestPaths.FreePort()}",
            $"--Mqtt:EmbeddedStatePath={Path.Combine(_work, "broker")}", $"--State:ConnectionString=Data Source={Path.Combine(_work, "state.db")}", "--Logging:LogLevel:Default=None", .. CoordinatorInstance.StorageArgs(options)]);
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => app.StartAsync());
        Assert.Contains("Storage:S3:SecretKey", ex.Message, StringComparison.Ordinal);
        await app.DisposeAsync();
    }

    [Fact]
    public async Task Start_BadS3Settings_RejectedBeforeAnyCall()
    {
        var app = CoordinatorApp.Build([$"--Urls=http://127.0.0.1:{TestPaths.FreePort()}", $"--Mqtt:EmbeddedPort={TestPaths.FreePort()}",
            "--Storage:Backend=s3", "--Storage:S3:Endpoint=ftp://x", "--Storage:S3:Bucket=Bad_Bucket", "--Logging:LogLevel:Default=None"]);
        var ex = await Assert.ThrowsAsync<Microsoft.Extensions.Options.OptionsValidationException>(() => app.StartAsync());
        Assert.Contains("Storage:S3:Endpoint", ex.Message, StringComparison.Ordinal);
        Assert.Contains("Storage:S3:Bucket", ex.Message, StringComparison.Ordinal);
        await app.DisposeAsync();
    }
}

/// <summary>Failure behaviour of the catalog on S3: an unreachable store and a cut-off upload.</summary>
[Collection(SwiftCollection.Name)]
public sealed class S3FailureTests(SwiftServer swift) : IDisposable
{
    private readonly string _work = TestPaths.NewTempDir("s3-failure");

    public void Dispose() => Directory.Delete(_work, true);

    [Fact]
    public async Task StoreUnreachable_503ProblemDetails_ThenRecovers()
    {
        await using var proxy = new TcpProxy(swift.Port);
        var options = swift.Options();
        options.S3.Endpoint = new Uri($"http://127.0.0.1:{proxy.Port}");
        await using var coordinator = await CoordinatorInstance.StartAsync(storage: options);
        var (path, _) = await TestImages.CreateAsync(_work, "a.img", 1024 * 1024, seed: 61);
        await coordinator.UploadAsync("a.img", path);

        proxy.Cut();
        using (var response = await coordinator.Http.PutAsync("api/v1/images/b.img", new ByteArrayContent(await File.ReadAllBytesAsync(path))))
        {
            Assert.Equal(System.Net.HttpStatusCode.ServiceUnavailable, response.StatusCode);
            Assert.Contains("store-unavailable", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
        proxy.Restore();
        using var again = await coordinator.Http.PutAsync("api/v1/images/b.img", new ByteArrayContent(await File.ReadAllBytesAsync(path)));
        Assert.Equal(System.Net.HttpStatusCode.Created, again.StatusCode);
    }

    [Fact]
    public async Task UploadCutOffHalfway_NotInCatalog_AndGcLeavesNoOrphan()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync(storage: swift.Options());
        var data = new byte[40 * 1024 * 1024];
        new Random(62).NextBytes(data);
        using var content = new StreamContent(new BreakingStream(data, breakAt: 30 * 1024 * 1024));
        content.Headers.ContentLength = data.Length;
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => coordinator.Http.PutAsync("api/v1/images/cut.img", content));

        Assert.Equal(System.Net.HttpStatusCode.NotFound, (await coordinator.Http.GetAsync("api/v1/images/cut.img")).StatusCode);
        var chunks = (MsdFleet.Coordinator.Storage.ChunkStore)coordinator.Services.GetService(typeof(MsdFleet.Coordinator.Storage.ChunkStore))!;
        var store = (MsdFleet.Coordinator.Storage.IObjectStore)coordinator.Services.GetService(typeof(MsdFleet.Coordinator.Storage.IObjectStore))!;
        // The server may still be writing the cut-off upload's last pack when the client has given up: GC
        // is run until the index and the bucket are both empty, and must get there.
        await Eventually.WaitAsync(async () =>
        {
            using var gc = await coordinator.Http.PostAsync("api/v1/gc", null);
            gc.EnsureSuccessStatusCode();
            var left = 0;
            await foreach (var _ in store.ListAsync("packs/", CancellationToken.None))
                left++;
            return chunks.PackCount == 0 && left == 0;
        }, TimeSpan.FromSeconds(30), "GC to reclaim every pack of the cut-off upload");
        await foreach (var key in store.ListAsync("manifests/", CancellationToken.None))
            Assert.Fail($"manifest {key} of a cut-off upload exists");
    }

    /// <summary>Sends part of the body, then fails like a dropped client connection.</summary>
    private sealed class BreakingStream(byte[] data, int breakAt) : MemoryStream(data)
    {
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (Position >= breakAt)
                throw new IOException("client went away");
            return await base.ReadAsync(buffer[..Math.Min(buffer.Length, breakAt - (int)Position)], cancellationToken);
        }
    }
}
