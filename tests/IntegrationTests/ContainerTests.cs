using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using MsdFleet.Coordinator.Tests.State;
using MsdFleet.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// The project's own container image, run from the project's own manifests: scripts/build-image.sh builds
/// the image, deploy/k8s/base is rendered through a generated test overlay and started with
/// <c>podman kube play</c> as two Coordinator pods sharing a PostgreSQL, an OpenStack Swift (S3) and a
/// Mosquitto on this machine — the way replicas share them in a cluster. What one pod writes the other
/// serves, both export the dashboard's metrics, and one survives the other being killed.
/// </summary>
[Collection(PostgresServers.Name)]
public sealed class ContainerTests(PostgresServer postgres, ITestOutputHelper output) : IAsyncLifetime
{
    private static readonly TimeSpan Minute = TimeSpan.FromMinutes(1);
    private readonly string _work = TestPaths.NewTempDir("container");
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly SwiftServer _swift = new();
    private MosquittoBroker? _mosquitto;

    public async Task InitializeAsync()
    {
        await _swift.InitializeAsync();
        _mosquitto = await MosquittoBroker.StartAsync();
    }

    public async Task DisposeAsync()
    {
        if (_mosquitto is not null)
            await _mosquitto.DisposeAsync();
        await _swift.DisposeAsync();
        try
        {
            Directory.Delete(_work, true);
        }
        catch (IOException)
        {
        }
    }

    [Fact]
    public async Task TwoPodsOfTheRenderedBase_ShareOneState_ExportTheDashboardsMetrics_AndOneSurvivesTheOthersKill()
    {
        // 1. The image, exactly as an operator builds it.
        var (built, buildLog, printed) = await Podman.RunToolAsync(Path.Combine(TestPaths.RepoRoot, "scripts", "build-image.sh"), TimeSpan.FromMinutes(10));
        Assert.True(built == 0, $"scripts/build-image.sh failed:\n{buildLog}");
        var image = printed.TrimEnd().Split('\n')[^1].Trim();
        Assert.Matches(@"^localhost/msdfleet/coordinator:\d+\.\d+\.\d+$", image);
        Log($"image {image} built");

        // 2. The shared services and a test overlay per pod (its own ports on the host network).
        var bucket = "ct" + Guid.NewGuid().ToString("N")[..16];
        using (await _swift.CreateStoreAsync(bucket))
        {
        }
        var database = await postgres.CreateDatabaseAsync();
        var prefix = $"ct{Guid.NewGuid():N}"[..12] + "/v1";
        var pods = new[] { new Pod("a", TestPaths.FreePort(), TestPaths.FreePort()), new Pod("b", TestPaths.FreePort(), TestPaths.FreePort()) };
        var manifests = new List<string>();
        foreach (var pod in pods)
            manifests.Add(await RenderAsync(pod, image, database, bucket, prefix));
        var play = Path.Combine(_work, "play.yaml");
        await File.WriteAllTextAsync(play, string.Join("---\n", manifests));
        Assert.DoesNotContain("ghcr.io/", await File.ReadAllTextAsync(play), StringComparison.Ordinal);

        try
        {
            // 3. Both pods ready: /readyz answers 200 only when PostgreSQL, Swift and Mosquitto all answer.
            await Podman.CheckedAsync("podman", Minute, "kube", "play", "--replace", play);
            using var probe = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
            foreach (var pod in pods)
                await Eventually.WaitAsync(async () => await StatusAsync(probe, pod.Url("readyz")) == HttpStatusCode.OK, Minute, $"pod {pod.Name} ready", () => Logs(pods));
            Log("both pods ready");
            // The process runs as the image's non-root user and cannot write its root file system.
            var user = await Podman.CheckedAsync("podman", Minute, "top", pods[0].Container, "huser", "user");
            Assert.Contains("1654", user, StringComparison.Ordinal);
            var inspect = JsonNode.Parse(await Podman.CheckedAsync("podman", Minute, "inspect", pods[0].Container))!.AsArray()[0]!;
            Assert.True(inspect["HostConfig"]!["ReadonlyRootfs"]!.GetValue<bool>(), "the root file system is writable");

            // 4. One truth: uploaded through A, served bit-identical by B, stored in Swift and PostgreSQL,
            // and an assignment through A published on Mosquitto.
            using var a = Client(pods[0]);
            using var b = Client(pods[1]);
            var (path, sha256) = await TestImages.CreateAsync(_work, "ct.img", 2 * 1024 * 1024 + 17, seed: 47);
            string digest;
            await using (var file = File.OpenRead(path))
            using (var upload = await a.PutAsync("api/v1/images/ct.img", new StreamContent(file)))
            {
                var body = await upload.Content.ReadAsStringAsync();
                Assert.True(upload.IsSuccessStatusCode, $"upload through A: {(int)upload.StatusCode} {body}");
                digest = JsonNode.Parse(body)!["digest"]!.GetValue<string>();
            }
            Assert.Equal(sha256, await DownloadSha256Async(b));
            Assert.Contains("ct.img", await b.GetStringAsync("api/v1/images"), StringComparison.Ordinal);
            await AssertInSwiftAsync(bucket, digest);
            await AssertInPostgresAsync(database, digest);
            await AssertPublishedOnMosquittoAsync(a, b, prefix);
            Log("uploaded through A, downloaded through B, found in Swift, PostgreSQL and Mosquitto");

            // 5. Every metric the Grafana dashboard queries is exported by the pods (presigned bytes, GC and
            // publish latency are recorded only when they happen: provoked above and here).
            using (var layout = await b.GetAsync($"api/v1/blobs/{digest}/layout"))
                Assert.True(layout.IsSuccessStatusCode, $"layout through B: {(int)layout.StatusCode} {await layout.Content.ReadAsStringAsync()}");
            using (var gc = await a.PostAsync("api/v1/gc", null))
                Assert.True(gc.IsSuccessStatusCode, $"GC through A: {(int)gc.StatusCode}");
            var wanted = GrafanaDashboard.MetricNames(GrafanaDashboard.Load(TestPaths.RepoRoot)).ToList();
            Assert.NotEmpty(wanted);
            var missing = new List<string>();
            await Eventually.WaitAsync(async () =>
            {
                var scraped = new HashSet<string>(StringComparer.Ordinal);
                foreach (var pod in pods)
                    scraped.UnionWith((await ScrapeAsync(probe, pod)).Keys);
                missing = [.. wanted.Where(w => !scraped.Contains(w)).Order(StringComparer.Ordinal)];
                return missing.Count == 0;
            }, TimeSpan.FromSeconds(30), "every dashboard metric in the pods' scrapes", () => "missing: " + string.Join(", ", missing));
            // Exactly one replica leads.
            var leader = await LeaderAsync(probe, pods, TimeSpan.FromSeconds(30));
            var survivor = pods.Single(p => p != leader);
            Log($"every dashboard metric scraped; pod {leader.Name} leads");

            // 6. The leader's pod dies (SIGKILL, then removed, as when its node is lost); the other serves on
            // and takes the lease over.
            await Podman.CheckedAsync("podman", Minute, "pod", "kill", "--signal", "KILL", leader.PodName);
            await Podman.CheckedAsync("podman", Minute, "pod", "rm", "--force", leader.PodName);
            await Eventually.WaitAsync(async () => await StatusAsync(probe, leader.Url("healthz")) is null, TimeSpan.FromSeconds(20), $"pod {leader.Name} gone");
            using var survivorClient = Client(survivor);
            Assert.Equal(HttpStatusCode.OK, await StatusAsync(probe, survivor.Url("readyz")));
            Assert.Equal(sha256, await DownloadSha256Async(survivorClient));
            await Eventually.WaitAsync(async () => (await ScrapeAsync(probe, survivor)).GetValueOrDefault("msdfleet_leader") == 1,
                TimeSpan.FromSeconds(45), $"pod {survivor.Name} to take the leader lease over", () => Logs([survivor]));
            Log($"pod {leader.Name} killed; pod {survivor.Name} serves and leads");
        }
        finally
        {
            // kube down stops at a pod that is already gone (the killed one), so what it leaves is removed by name.
            await Podman.RunAsync(Minute, "kube", "down", play);
            foreach (var pod in pods)
                await Podman.RunAsync(Minute, "pod", "rm", "--force", "--ignore", pod.PodName);
            var (_, left) = await Podman.RunAsync(Minute, "pod", "ps", "--format", "{{.Name}}");
            Assert.DoesNotContain("msdfleet-coordinator-", left, StringComparison.Ordinal);
        }
    }


    /// <summary>One single-replica copy of the base: its own name suffix, ports and pod.</summary>
    private sealed record Pod(string Name, int HttpPort, int MetricsPort)
    {
        public string PodName => $"msdfleet-coordinator-{Name}-pod-0";
        public string Container => $"{PodName}-coordinator";
        public Uri BaseUrl => new($"http://127.0.0.1:{HttpPort}/");
        public Uri Url(string path) => new(BaseUrl, path);
        public Uri MetricsUrl => new($"http://127.0.0.1:{MetricsPort}/metrics");
    }

    /// <summary>
    /// A kustomization that takes deploy/k8s/base as it is and changes only what running two pods on one host
    /// needs: one replica, the host's network (the test's servers listen on loopback) with this pod's own ports,
    /// the local image, the shared services' addresses; and the secret-backed variables as plain values,
    /// because podman 4.3 cannot read Secrets created from Kubernetes YAML (docs/kubernetes.md).
    /// </summary>
    private async Task<string> RenderAsync(Pod pod, string image, string database, string bucket, string prefix)
    {
        var dir = Path.Combine(_work, "overlay-" + pod.Name);
        Directory.CreateDirectory(dir);
        var baseDir = Path.GetRelativePath(dir, Path.Combine(TestPaths.RepoRoot, "deploy", "k8s", "base"));
        var (imageName, imageTag) = (image[..image.LastIndexOf(':')], image[(image.LastIndexOf(':') + 1)..]);
        static string Q(string value) => JsonSerializer.Serialize(value);
        string Env(string name, string value) => $"                  - {{ name: {name}, value: {Q(value)}, valueFrom: null }}";
        await File.WriteAllTextAsync(Path.Combine(dir, "kustomization.yaml"), $"""
            apiVersion: kustomize.config.k8s.io/v1beta1
            kind: Kustomization
            resources:
              - {baseDir}
            nameSuffix: -{pod.Name}
            images:
              - name: ghcr.io/msdfleet/coordinator
                newName: {imageName}
                newTag: {Q(imageTag)}
            configMapGenerator:
              - name: msdfleet-coordinator
                behavior: merge
                literals:
                  - {Q($"Urls=http://127.0.0.1:{pod.HttpPort}")}
                  - {Q($"Metrics__Port={pod.MetricsPort}")}
                  - {Q($"State__ConnectionString={database}")}
                  - {Q($"Storage__S3__Endpoint={_swift.Endpoint}")}
                  - {Q($"Storage__S3__Bucket={bucket}")}
                  - {Q($"Mqtt__Broker={_mosquitto!.Url}")}
                  - {Q($"Mqtt__TopicPrefix={prefix}")}
            patches:
              - patch: |-
                  apiVersion: apps/v1
                  kind: Deployment
                  metadata:
                    name: msdfleet-coordinator
                  spec:
                    replicas: 1
                    template:
                      spec:
                        hostNetwork: true
                        containers:
                          - name: coordinator
                            # podman refuses port mappings on the host network; the ports are the Urls above.
                            ports: null
                            env:
            {Env("PGPASSWORD", "unused-the-test-server-trusts-loopback")}
            {Env("Storage__S3__AccessKey", SwiftServer.AccessKey)}
            {Env("Storage__S3__SecretKey", SwiftServer.SecretKey)}
            {Env("Mqtt__Username", "msdfleet-coordinator")}
            {Env("Mqtt__Password", "unused-the-test-broker-is-anonymous")}
            {Env("Auth__BootstrapAdminToken", CoordinatorInstance.AdminToken)}
            {Env("Auth__BootstrapAdminPassword", "unused-" + Guid.NewGuid().ToString("N"))}
            """);
        var rendered = await Podman.CheckedAsync("kubectl", Minute, "kustomize", dir);
        Assert.Contains("hostNetwork: true", rendered, StringComparison.Ordinal);
        Assert.DoesNotContain("secretKeyRef", rendered, StringComparison.Ordinal);
        return rendered;
    }

    private static HttpClient Client(Pod pod)
    {
        var client = new HttpClient { BaseAddress = pod.BaseUrl, Timeout = Minute };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", CoordinatorInstance.AdminToken);
        return client;
    }

    private static async Task<HttpStatusCode?> StatusAsync(HttpClient client, Uri url)
    {
        try
        {
            using var response = await client.GetAsync(url);
            return response.StatusCode;
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
        {
            return null;
        }
    }

    private static async Task<string> DownloadSha256Async(HttpClient client)
    {
        using var response = await client.GetAsync("api/v1/images/ct.img", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await using var stream = await response.Content.ReadAsStreamAsync();
        return Convert.ToHexStringLower(await System.Security.Cryptography.SHA256.HashDataAsync(stream));
    }

    private async Task AssertInSwiftAsync(string bucket, string digest)
    {
        using var store = await _swift.CreateStoreAsync(bucket);
        // The image's manifest and its packs went to the bucket, not to a pod's own disk.
        var manifests = new List<string>();
        await foreach (var key in store.ListAsync(MsdFleet.Coordinator.Storage.ObjectKeys.ManifestsPrefix, CancellationToken.None))
            manifests.Add(key);
        Assert.Contains(manifests, k => k.EndsWith(digest["sha256:".Length..], StringComparison.Ordinal));
        var packs = 0;
        await foreach (var _ in store.ListAsync(MsdFleet.Coordinator.Storage.ChunkStore.PacksPrefix, CancellationToken.None))
            packs++;
        Assert.True(packs > 0, "no packs in the Swift bucket");
    }

    private static async Task AssertInPostgresAsync(string database, string digest)
    {
        await using var connection = new Npgsql.NpgsqlConnection(database);
        await connection.OpenAsync();
        await using var command = new Npgsql.NpgsqlCommand("SELECT digest FROM catalog_images WHERE name = 'ct.img'", connection);
        Assert.Equal(digest, await command.ExecuteScalarAsync() as string);
    }

    /// <summary>An assignment made through A is published retained on Mosquitto (B creates the agent).</summary>
    private async Task AssertPublishedOnMosquittoAsync(HttpClient a, HttpClient b, string prefix)
    {
        using (var credentials = await b.PostAsync("api/v1/agents/ct-agent/credentials", null))
            Assert.True(credentials.IsSuccessStatusCode, $"agent credentials through B: {(int)credentials.StatusCode}");
        using (var set = await a.PutAsJsonAsync("api/v1/agents/ct-agent/drives/0", new { image = "ct.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode, $"drive assignment through A: {(int)set.StatusCode} {await set.Content.ReadAsStringAsync()}");
        using var client = new MQTTnet.MqttClientFactory().CreateMqttClient();
        var received = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        client.ApplicationMessageReceivedAsync += e =>
        {
            received.TrySetResult(e.ApplicationMessage.Topic);
            return Task.CompletedTask;
        };
        await client.ConnectAsync(new MQTTnet.MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", _mosquitto!.Port).Build());
        await client.SubscribeAsync(new MQTTnet.MqttClientSubscribeOptionsBuilder().WithTopicFilter($"{prefix}/agents/ct-agent/desired").Build());
        Assert.Equal($"{prefix}/agents/ct-agent/desired", await received.Task.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    /// <summary>Series name → value of the last sample with that name (enough for the unlabelled gauges read here).</summary>
    private static async Task<Dictionary<string, double>> ScrapeAsync(HttpClient client, Pod pod)
    {
        var series = new Dictionary<string, double>(StringComparer.Ordinal);
        string text;
        try
        {
            text = await client.GetStringAsync(pod.MetricsUrl);
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
        {
            return series;
        }
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#')
                continue;
            var end = line.IndexOfAny(['{', ' ']);
            var value = line[(line.LastIndexOf(' ') + 1)..];
            series[line[..end]] = double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v : double.NaN;
        }
        return series;
    }

    private static async Task<Pod> LeaderAsync(HttpClient client, Pod[] pods, TimeSpan timeout)
    {
        Pod? leader = null;
        await Eventually.WaitAsync(async () =>
        {
            var values = new List<double>();
            foreach (var pod in pods)
                values.Add((await ScrapeAsync(client, pod)).GetValueOrDefault("msdfleet_leader", double.NaN));
            leader = values.Count(v => v == 1) == 1 && values.Count(v => v == 0) == pods.Length - 1 ? pods[values.IndexOf(1)] : null;
            return leader is not null;
        }, timeout, "exactly one pod to report msdfleet_leader 1");
        return leader!;
    }

    private static string Logs(IEnumerable<Pod> pods)
    {
        var logs = new System.Text.StringBuilder();
        foreach (var pod in pods)
        {
            var (_, text) = Podman.RunAsync(Minute, "logs", "--tail", "40", pod.Container).GetAwaiter().GetResult();
            logs.Append(CultureInfo.InvariantCulture, $"--- {pod.Container}\n{text}\n");
        }
        return logs.ToString();
    }

    private void Log(string what) => output.WriteLine($"{_clock.Elapsed.TotalSeconds,6:0.0} s  {what}");
}
