using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using MsdFleet.Coordinator;
using MsdFleet.Coordinator.Catalog;
using MsdFleet.Coordinator.Messaging;

namespace MsdFleet.IntegrationTests.Infrastructure;

/// <summary>
/// The real Coordinator, in-process on real Kestrel and a real broker (embedded or external).
/// Its data folder and ports survive <see cref="RestartAsync"/>, as on a real host.
/// </summary>
public sealed class CoordinatorInstance : IAsyncDisposable
{
    public const string AdminToken = "msdf_integration-test-admin-token-0123456789abcdef";
    private readonly string? _externalBroker;
    private readonly MsdFleet.Coordinator.Storage.ObjectStoreOptions? _storage;
    private WebApplication? _app;

    private readonly bool _tls;
    private string[] _extraArgs = [];
    private string? _tlsDirectory;

    private CoordinatorInstance(string dataDir, Uri? externalBroker, MsdFleet.Coordinator.Storage.ObjectStoreOptions? storage, bool tls, string? topicPrefix)
    {
        _tls = tls;
        _storage = storage;
        DataDir = dataDir;
        _externalBroker = externalBroker?.ToString().TrimEnd('/');
        HttpPort = TestPaths.FreePort();
        MqttPort = externalBroker?.Port ?? TestPaths.FreePort();
        // A prefix per instance keeps tests that share one Mosquitto apart.
        TopicPrefix = topicPrefix ?? $"it{Guid.NewGuid():N}"[..12] + "/v1";
    }

    public string DataDir { get; }
    public int HttpPort { get; }
    public int MqttPort { get; }
    public string TopicPrefix { get; }
    public Uri BaseUrl => new($"{(_tls ? "https" : "http")}://127.0.0.1:{HttpPort}/");
    public Uri BrokerUrl => new($"{(_tls ? "mqtts" : "mqtt")}://127.0.0.1:{MqttPort}");

    /// <summary>The generated CA (self-signed TLS only).</summary>
    public string CaPath => Path.Combine(TlsDirectory, "ca.crt");

    private string TlsDirectory => _tlsDirectory ?? Path.Combine(DataDir, "tls");

    /// <summary>An admin client (trusting the generated CA when TLS is on).</summary>
    public HttpClient Http => _http ??= NewClient(AdminToken);
    private HttpClient? _http;

    /// <summary>A client without credentials unless <paramref name="bearer"/> is given; trusts the generated CA when TLS is on.</summary>
    public HttpClient NewClient(string? bearer = null)
    {
        var handler = new SocketsHttpHandler();
        if (_tls)
            MsdFleet.Protocol.Security.TlsTrust.FromPemFile(CaPath).Apply(handler);
        var client = new HttpClient(handler) { BaseAddress = BaseUrl, Timeout = TimeSpan.FromMinutes(5) };
        if (bearer is not null)
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
        return client;
    }
    public IServiceProvider Services => _app!.Services;
    public TransferCounters Counters => Services.GetRequiredService<TransferCounters>();

    public static async Task<CoordinatorInstance> StartAsync(Uri? externalBroker = null, MsdFleet.Coordinator.Storage.ObjectStoreOptions? storage = null,
        bool tls = false, string[]? extraArgs = null, string? tlsDirectory = null, string? topicPrefix = null)
    {
        var instance = new CoordinatorInstance(TestPaths.NewTempDir("coordinator"), externalBroker, storage, tls, topicPrefix)
        {
            _extraArgs = extraArgs ?? [],
            _tlsDirectory = tlsDirectory,
        };
        await instance.StartAppAsync();
        return instance;
    }

    public async Task RestartAsync()
    {
        await StopAsync();
        await StartAppAsync();
    }

    public async Task StopAsync()
    {
        if (_app is null)
            return;
        await _app.StopAsync();
        await _app.DisposeAsync();
        _app = null;
    }

    private async Task StartAppAsync()
    {
        string[] args =
        [
            $"--Urls={BaseUrl}",
            $"--Storage:Path={Path.Combine(DataDir, "store")}",
            $"--State:ConnectionString=Data Source={Path.Combine(DataDir, "state.db")}",
            $"--Mqtt:Broker={_externalBroker ?? "embedded"}",
            $"--Mqtt:EmbeddedPort={MqttPort}",
            $"--Mqtt:EmbeddedStatePath={Path.Combine(DataDir, "broker")}",
            $"--Mqtt:TopicPrefix={TopicPrefix}",
            $"--Auth:BootstrapAdminToken={AdminToken}",
            "--Logging:LogLevel:Default=Warning",
            $"--Tls:Mode={(_tls ? "self-signed" : "off")}",
            $"--Tls:Directory={TlsDirectory}",
            .. StorageArgs(_storage),
            .. _extraArgs,
        ];
        _app = CoordinatorApp.Build(args);
        await _app.StartAsync();
        var mqtt = _app.Services.GetRequiredService<CoordinatorMqttService>();
        await mqtt.Connected.WaitAsync(TimeSpan.FromSeconds(20));
    }

    public static string[] StorageArgs(MsdFleet.Coordinator.Storage.ObjectStoreOptions? storage) => storage is null ? [] :
    [
        "--Storage:Backend=s3",
        $"--Storage:S3:Endpoint={storage.S3.Endpoint}",
        $"--Storage:S3:Bucket={storage.S3.Bucket}",
        $"--Storage:S3:AccessKey={storage.S3.AccessKey}",
        $"--Storage:S3:SecretKey={storage.S3.SecretKey}",
    ];

    public async Task<string> CreateAgentSecretAsync(string agentId)
    {
        using var response = await Http.PostAsync($"api/v1/agents/{agentId}/credentials", null);
        response.EnsureSuccessStatusCode();
        return (await response.Content.ReadFromJsonAsync<JsonObject>())!["secret"]!.GetValue<string>();
    }

    public async Task<JsonObject> UploadAsync(string name, string path)
    {
        await using var file = File.OpenRead(path);
        using var content = new StreamContent(file, 1 << 20);
        using var response = await Http.PutAsync($"api/v1/images/{Uri.EscapeDataString(name)}", content);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"upload failed: {(int)response.StatusCode} {body}");
        return JsonNode.Parse(body)!.AsObject();
    }

    public async Task<HttpResponseMessage> SetDriveAsync(string agentId, int drive, object body) =>
        await Http.PutAsJsonAsync($"api/v1/agents/{agentId}/drives/{drive}", body);

    public async Task<JsonObject?> GetAgentAsync(string agentId)
    {
        using var response = await Http.GetAsync($"api/v1/agents/{agentId}");
        return response.IsSuccessStatusCode ? JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject() : null;
    }

    /// <summary>Waits until the agent's report satisfies <paramref name="predicate"/>; returns that report.</summary>
    public Task<JsonObject> WaitForAgentAsync(string agentId, Func<JsonObject, bool> predicate, string what, TimeSpan? timeout = null, Func<string>? diagnostics = null) =>
        Eventually.WaitAsync(async () =>
        {
            var agent = await GetAgentAsync(agentId);
            return agent is not null && predicate(agent) ? agent : null;
        }, timeout ?? TimeSpan.FromSeconds(60), $"{agentId}: {what}", diagnostics);

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _http?.Dispose();
        try
        {
            Directory.Delete(DataDir, true);
        }
        catch (IOException)
        {
        }
    }

    public static JsonObject? Drive(JsonObject agent, int index) =>
        agent["drives"]?.AsArray().Select(d => d!.AsObject()).FirstOrDefault(d => d["index"]!.GetValue<int>() == index);

    public static string Dump(JsonObject? value) => value?.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) ?? "(none)";
}
