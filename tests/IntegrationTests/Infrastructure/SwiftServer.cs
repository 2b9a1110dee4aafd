using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using MsdFleet.Coordinator.Storage;

namespace MsdFleet.IntegrationTests.Infrastructure;

/// <summary>
/// A real OpenStack Swift with s3api on loopback, started once for the tests that share it
/// (scripts/swift.sh). Not installed means failure with a clear message, never a skip.
/// </summary>
public sealed class SwiftServer : IAsyncLifetime
{
    public const string AccessKey = "test:tester";
    public const string SecretKey = "testing";
    private readonly string _dir = TestPaths.NewTempDir("swift");

    public int Port { get; } = TestPaths.FreePortBlock(5);
    public Uri Endpoint => new($"http://127.0.0.1:{Port}");

    public async Task InitializeAsync()
    {
        var script = Path.Combine(TestPaths.RepoRoot, "scripts", "swift.sh");
        var (code, output) = await RunAsync(script, "start", _dir, Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (code != 0)
            throw new InvalidOperationException($"Swift did not start (scripts/test.sh installs it with apt): {output}");
    }

    public async Task DisposeAsync()
    {
        await RunAsync(Path.Combine(TestPaths.RepoRoot, "scripts", "swift.sh"), "stop", _dir);
        try
        {
            Directory.Delete(_dir, true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Options for a store in its own fresh bucket, so tests never see each other's objects.</summary>
    public ObjectStoreOptions Options(string? bucket = null, string? secret = null) => new()
    {
        Backend = "s3",
        S3 = new S3StoreOptions
        {
            Endpoint = Endpoint,
            Bucket = bucket ?? "t" + Guid.NewGuid().ToString("N")[..20],
            AccessKey = AccessKey,
            SecretKey = secret ?? SecretKey,
        },
    };

    public async Task<S3ObjectStore> CreateStoreAsync(string? bucket = null)
    {
        var store = new S3ObjectStore(Microsoft.Extensions.Options.Options.Create(Options(bucket)), NullLogger<S3ObjectStore>.Instance);
        await store.CheckAsync(CancellationToken.None);
        return store;
    }

    private static async Task<(int Code, string Output)> RunAsync(string file, params string[] args)
    {
        using var process = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false })!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, await stdout + await stderr);
    }
}

[CollectionDefinition(Name)]
public sealed class SwiftCollection : ICollectionFixture<SwiftServer>
{
    public const string Name = "swift";
}
