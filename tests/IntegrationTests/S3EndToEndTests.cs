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
    public async Task Start_WrongS3Secret_FailsWithMessageNamingTheSetting()
    {
        var options = swift.Options(secret: "not-the-secret");
        var app = CoordinatorApp.Build([$"--Urls=http://127.0.0.1:{TestPaths.FreePort()}", $"--Mqtt:EmbeddedPort={TestPaths.FreePort()}",
            $"--Mqtt:EmbeddedStatePath={Path.Combine(_work, "broker")}", "--Logging:LogLevel:Default=None", .. CoordinatorInstance.StorageArgs(options)]);
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
