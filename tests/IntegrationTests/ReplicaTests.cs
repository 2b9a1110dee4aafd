using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using MsdFleet.Coordinator.Tests.State;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// Two Coordinator replicas sharing one PostgreSQL, one S3 bucket (Swift) and one Mosquitto, with no sticky
/// sessions: what one writes, the other serves; what one revokes, the other refuses.
/// </summary>
[Collection(ReplicaServers.Name)]
public sealed class ReplicaTests(PostgresServer postgres, SwiftServer swift) : IAsyncLifetime
{
    private readonly MsdFleet.Coordinator.Storage.ObjectStoreOptions _storage = swift.Options();
    private readonly string _work = TestPaths.NewTempDir("replicas");
    private MosquittoBroker? _mosquitto;
    private CoordinatorInstance? _a;
    private CoordinatorInstance? _b;

    private CoordinatorInstance A => _a!;
    private CoordinatorInstance B => _b!;

    public async Task InitializeAsync()
    {
        _mosquitto = await MosquittoBroker.StartAsync();
        var database = await postgres.CreateDatabaseAsync();
        var prefix = $"rep{Guid.NewGuid():N}"[..12] + "/v1";
        string[] shared =
        [
            "--State:Provider=postgres", $"--State:ConnectionString={database}",
            .. CoordinatorInstance.StorageArgs(_storage),
        ];
        _a = await CoordinatorInstance.StartAsync(_mosquitto.Url, extraArgs: shared, topicPrefix: prefix);
        _b = await CoordinatorInstance.StartAsync(_mosquitto.Url, extraArgs: shared, topicPrefix: prefix);
    }

    public async Task DisposeAsync()
    {
        if (_b is not null)
            await _b.DisposeAsync();
        if (_a is not null)
            await _a.DisposeAsync();
        if (_mosquitto is not null)
            await _mosquitto.DisposeAsync();
        Directory.Delete(_work, true);
    }

    [Fact]
    public async Task UploadedOnA_MountedThroughB_AgentOnB_ConvergesBitIdentical()
    {
        var (path, sha256) = await TestImages.CreateAsync(_work, "shared.img", 3 * 1024 * 1024 + 11, seed: 71);
        var heardOnB = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        B.Services.GetRequiredService<MsdFleet.Coordinator.Catalog.ImageCatalog>().Changed += (name, action) => heardOnB.TrySetResult($"{action} {name}");
        var digest = (await A.UploadAsync("shared.img", path))["digest"]!.GetValue<string>();
        // B's live events hear of A's commit (PostgreSQL NOTIFY), so a browser on B sees the new image.
        Assert.Equal("committed shared.img", await heardOnB.Task.WaitAsync(TimeSpan.FromSeconds(5)));
        using (var whole = await B.Http.GetAsync("api/v1/images/shared.img"))
        {
            Assert.Equal(HttpStatusCode.OK, whole.StatusCode);
            Assert.Equal(sha256, Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(await whole.Content.ReadAsByteArrayAsync())));
        }

        await using var agent = new AgentProcess("rep-01", await A.CreateAgentSecretAsync("rep-01"), B);
        agent.Start();
        using (var set = await B.SetDriveAsync("rep-01", 0, new { image = "shared.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode, await set.Content.ReadAsStringAsync());
        await B.WaitForAgentAsync("rep-01", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == digest, "attached through B", diagnostics: () => agent.Log);
        Assert.Equal(sha256, Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(await File.ReadAllBytesAsync(agent.Lun("file")))));
        // A learns B's change through the database's notification, not by being asked.
        await Eventually.WaitAsync(async () => (await A.GetAgentAsync("rep-01"))?["desired"]?["drives"]?.AsArray().Count == 1,
            TimeSpan.FromSeconds(5), "A to show the desired state B wrote");
        // And A refuses to delete an image B's assignment uses.
        using var delete = await A.Http.DeleteAsync("api/v1/images/shared.img");
        Assert.Equal(HttpStatusCode.Conflict, delete.StatusCode);
    }

    [Fact]
    public async Task ConcurrentAssignmentsSpreadOverBothReplicas_GenerationsStrictlyIncrease_AgentEndsOnTheLast()
    {
        for (var i = 0; i < 2; i++)
        {
            var (path, _) = await TestImages.CreateAsync(_work, $"g{i}.img", 200_000 + i, seed: 80 + i);
            await A.UploadAsync($"g{i}.img", path);
        }
        await using var agent = new AgentProcess("rep-02", await B.CreateAgentSecretAsync("rep-02"), A);
        agent.Start();
        var generations = await Task.WhenAll(Enumerable.Range(0, 100).Select(async i =>
        {
            using var set = await (i % 2 == 0 ? A : B).SetDriveAsync("rep-02", 0, new { image = $"g{i % 2}.img", mode = "flash" });
            Assert.True(set.IsSuccessStatusCode, await set.Content.ReadAsStringAsync());
            return (await set.Content.ReadFromJsonAsync<JsonObject>())!["generation"]!.GetValue<long>();
        }));

        Assert.Equal(Enumerable.Range(1, 100).Select(g => (long)g), generations.Order());
        // The agent converges on generation 100, whichever replica published last ...
        await A.WaitForAgentAsync("rep-02", a => a["appliedGeneration"]?.GetValue<long>() == 100, "applied generation 100", diagnostics: () => agent.Log);
        // ... and the broker keeps generation 100 as the retained message: no older one was published after it.
        var key = await A.Services.GetRequiredService<MsdFleet.Coordinator.Auth.SigningKeyStore>().GetAsync(CancellationToken.None);
        Assert.Equal(100, (await RetainedDesiredAsync("rep-02", key)).Generation);
    }

    private async Task<MsdFleet.Protocol.Messages.DesiredState> RetainedDesiredAsync(string agentId, System.Security.Cryptography.ECDsa key)
    {
        using var client = new MQTTnet.MqttClientFactory().CreateMqttClient();
        var received = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        client.ApplicationMessageReceivedAsync += e =>
        {
            received.TrySetResult(System.Buffers.BuffersExtensions.ToArray(e.ApplicationMessage.Payload));
            return Task.CompletedTask;
        };
        await client.ConnectAsync(new MQTTnet.MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", _mosquitto!.Port).Build());
        await client.SubscribeAsync(new MQTTnet.MqttClientSubscribeOptionsBuilder().WithTopicFilter($"{A.TopicPrefix}/agents/{agentId}/desired").Build());
        var payload = await received.Task.WaitAsync(TimeSpan.FromSeconds(10));
        return MsdFleet.Protocol.Signing.DesiredStateSigning.Verify(payload, key, agentId);
    }

    [Fact]
    public async Task DatabaseUnreachable_ReadyzAndApi503WithRetryAfter_NothingHalfWritten_RecoversWithoutRestart()
    {
        var (path, _) = await TestImages.CreateAsync(_work, "db.img", 100_000, seed: 90);
        await A.UploadAsync("db.img", path);
        await A.CreateAgentSecretAsync("rep-04");
        var database = new Npgsql.NpgsqlConnectionStringBuilder(await A.Services.GetRequiredService<MsdFleet.Coordinator.State.StateDatabase>().ReadAsync(
            c => Task.FromResult(c.ConnectionString), CancellationToken.None));
        await using var proxy = new TcpProxy(database.Port);
        database.Port = proxy.Port;
        database.Password = null;
        await using var c = await CoordinatorInstance.StartAsync(_mosquitto!.Url, topicPrefix: A.TopicPrefix, extraArgs:
            ["--State:Provider=postgres", $"--State:ConnectionString={database.ConnectionString}", .. CoordinatorInstance.StorageArgs(_storage)]);

        proxy.Cut();
        using var probe = c.NewClient(); // as a kubelet asks: no credentials
        using (var ready = await probe.GetAsync("readyz"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
            Assert.Contains("\"database\":\"unavailable\"", await ready.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
        using (var list = await c.Http.GetAsync("api/v1/images"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, list.StatusCode);
            Assert.NotNull(list.Headers.RetryAfter);
        }
        using (var set = await c.SetDriveAsync("rep-04", 0, new { image = "db.img", mode = "flash" }))
            Assert.Equal(HttpStatusCode.ServiceUnavailable, set.StatusCode);
        Assert.Null((await A.GetAgentAsync("rep-04"))!["desired"]); // nothing was stored

        proxy.Restore();
        await Eventually.WaitAsync(async () =>
        {
            using var ready = await probe.GetAsync("readyz");
            return ready.StatusCode == HttpStatusCode.OK;
        }, TimeSpan.FromSeconds(20), "C to be ready again without a restart");
        using (var set = await c.SetDriveAsync("rep-04", 0, new { image = "db.img", mode = "flash" }))
        {
            Assert.True(set.IsSuccessStatusCode, await set.Content.ReadAsStringAsync());
            Assert.Equal(1, (await set.Content.ReadFromJsonAsync<JsonObject>())!["generation"]!.GetValue<long>()); // the refused one left nothing
        }
    }

    [Fact]
    public async Task GarbageCollection_RunsOnTheLeaderOnly_AskingAnotherReplicaHandsItOver()
    {
        MsdFleet.Coordinator.State.LeaderLease Lease(CoordinatorInstance c) => c.Services.GetRequiredService<MsdFleet.Coordinator.State.LeaderLease>();
        await Eventually.WaitAsync(() => Lease(A).IsLeader ^ Lease(B).IsLeader, TimeSpan.FromSeconds(10), "exactly one leader");
        var (leader, follower) = Lease(A).IsLeader ? (A, B) : (B, A);
        var (path, _) = await TestImages.CreateAsync(_work, "gone.img", 300_000, seed: 95);
        await follower.UploadAsync("gone.img", path);
        using (var delete = await follower.Http.DeleteAsync("api/v1/images/gone.img"))
            Assert.Equal(HttpStatusCode.NoContent, delete.StatusCode);
        var store = follower.Services.GetRequiredService<MsdFleet.Coordinator.Storage.IObjectStore>();
        async Task<int> PacksAsync()
        {
            var n = 0;
            await foreach (var _ in store.ListAsync("packs/", CancellationToken.None))
                n++;
            return n;
        }
        Assert.True(await PacksAsync() > 0);

        using (var asked = await follower.Http.PostAsync("api/v1/gc", null))
        {
            Assert.Equal(HttpStatusCode.Accepted, asked.StatusCode);
            Assert.Equal(Lease(leader).Holder, (await asked.Content.ReadFromJsonAsync<JsonObject>())!["leader"]!.GetValue<string>());
        }
        // The leader takes the request within a renewal round and frees the packs the follower wrote.
        await Eventually.WaitAsync(async () => await PacksAsync() == 0, TimeSpan.FromSeconds(20), "the leader to collect");
        using var direct = await leader.Http.PostAsync("api/v1/gc", null);
        Assert.Equal(HttpStatusCode.OK, direct.StatusCode);
    }

    [Fact]
    public async Task ImportAskedOnAFollower_RunsOnTheLeader_SeenAndCancelledFromAnyReplica()
    {
        MsdFleet.Coordinator.State.LeaderLease Lease(CoordinatorInstance c) => c.Services.GetRequiredService<MsdFleet.Coordinator.State.LeaderLease>();
        await Eventually.WaitAsync(() => Lease(A).IsLeader ^ Lease(B).IsLeader, TimeSpan.FromSeconds(10), "exactly one leader");
        var (leader, follower) = Lease(A).IsLeader ? (A, B) : (B, A);

        // A source that sends 64 KiB of a 10 MiB body and then nothing: the import stays running until cancelled.
        using var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        // Completes when the importer hangs up: the signal that the cancelled runner really stopped.
        var hungUp = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _ = Task.Run(async () =>
        {
            using var client = await listener.AcceptTcpClientAsync();
            await using var stream = client.GetStream();
            var buffer = new byte[4096];
            _ = await stream.ReadAsync(buffer);
            await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n"));
            await stream.WriteAsync(new byte[64 * 1024]);
            try
            {
                while (await stream.ReadAsync(buffer) > 0)
                {
                }
            }
            catch (IOException)
            {
            }
            hungUp.TrySetResult();
        });
        var url = $"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}/stalls.iso";
        using var start = await follower.Http.PostAsJsonAsync("api/v1/images/import", new { url, name = "stalls.iso" });
        Assert.Equal(HttpStatusCode.Accepted, start.StatusCode);
        var id = (await start.Content.ReadFromJsonAsync<JsonObject>())!["id"]!.GetValue<string>();

        await Eventually.WaitAsync(async () =>
        {
            var job = await leader.Http.GetFromJsonAsync<JsonObject>($"api/v1/jobs/{id}");
            return job!["state"]!.GetValue<string>() == "running" && job["bytesDone"]!.GetValue<long>() >= 64 * 1024;
        }, TimeSpan.FromSeconds(15), "the leader to run the job and report its progress");
        Assert.Contains(id, await follower.Http.GetStringAsync("api/v1/jobs"), StringComparison.Ordinal);

        using (var cancel = await follower.Http.PostAsync($"api/v1/jobs/{id}/cancel", null))
            Assert.Equal(HttpStatusCode.OK, cancel.StatusCode);
        using (var again = await leader.Http.PostAsync($"api/v1/jobs/{id}/cancel", null))
            Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
        await hungUp.Task.WaitAsync(TimeSpan.FromSeconds(15)); // the runner's next heartbeat stops it and drops the download
        Assert.Equal("cancelled", (await leader.Http.GetFromJsonAsync<JsonObject>($"api/v1/jobs/{id}"))!["state"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.NotFound, (await leader.Http.GetAsync("api/v1/images/stalls.iso")).StatusCode);
    }

    [Fact]
    public async Task PushStartedOnA_ContinuedAndCommittedOnB_BitIdentical_OnlyMissingChunksAsked()
    {
        var data = new byte[3 * 1024 * 1024 + 5];
        new Random(99).NextBytes(data);
        var chunker = new MsdFleet.Protocol.Chunking.ContentChunker(MsdFleet.Protocol.Chunking.ChunkerParameters.Default);
        var chunks = new List<byte[]>();
        await foreach (var chunk in MsdFleet.Protocol.Chunking.StreamChunker.ReadChunksAsync(new MemoryStream(data), chunker))
            chunks.Add(chunk.ToArray());
        var manifest = new MsdFleet.Protocol.Manifests.ImageManifest
        {
            Size = data.Length,
            Sha256 = System.Security.Cryptography.SHA256.HashData(data),
            Chunker = MsdFleet.Protocol.Chunking.ChunkerParameters.Default,
            Chunks = chunks.Select(c => new MsdFleet.Protocol.Manifests.ManifestChunk { Id = System.Security.Cryptography.SHA256.HashData(c), Length = c.Length }).ToList(),
        };
        static ByteArrayContent Frames(IEnumerable<byte[]> chunks)
        {
            var body = new MemoryStream();
            foreach (var chunk in chunks)
            {
                var header = new byte[4];
                System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(header, chunk.Length);
                body.Write(header);
                body.Write(chunk);
            }
            return new ByteArrayContent(body.ToArray());
        }

        using var create = await A.Http.PostAsync("api/v1/uploads", new ByteArrayContent(manifest.ToBytes()));
        Assert.Equal(HttpStatusCode.Created, create.StatusCode);
        var id = (await create.Content.ReadFromJsonAsync<JsonObject>())!["uploadId"]!.GetValue<string>();
        var half = chunks.Count / 2;
        using (var first = await A.Http.PostAsync($"api/v1/uploads/{id}/chunks", Frames(chunks.Take(half))))
            Assert.True(first.IsSuccessStatusCode);
        // B knows the session, and asks only for what A has not stored yet.
        var status = (await B.Http.GetFromJsonAsync<JsonObject>($"api/v1/uploads/{id}"))!;
        Assert.Equal(chunks.Skip(half).Select(c => Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(c))).Distinct().Order(),
            status["missing"]!.AsArray().Select(m => m!.GetValue<string>()).Order());
        using (var rest = await B.Http.PostAsync($"api/v1/uploads/{id}/chunks", Frames(chunks.Skip(half))))
            Assert.True(rest.IsSuccessStatusCode);
        using (var commit = await B.Http.PostAsJsonAsync($"api/v1/uploads/{id}/commit", new { name = "pushed.img" }))
            Assert.Equal(HttpStatusCode.Created, commit.StatusCode);
        Assert.Equal(data, await A.Http.GetByteArrayAsync("api/v1/images/pushed.img"));
        Assert.Equal(HttpStatusCode.NotFound, (await A.Http.GetAsync($"api/v1/uploads/{id}")).StatusCode); // committed on B: closed on A too
    }

    [Fact]
    public async Task LeaderStopsMidImport_TheOtherBecomesLeader_ReQueuesTheOrphanedJob_AndFinishesIt()
    {
        MsdFleet.Coordinator.State.LeaderLease Lease(CoordinatorInstance c) => c.Services.GetRequiredService<MsdFleet.Coordinator.State.LeaderLease>();
        await Eventually.WaitAsync(() => Lease(A).IsLeader ^ Lease(B).IsLeader, TimeSpan.FromSeconds(10), "exactly one leader");
        var (leader, follower) = Lease(A).IsLeader ? (A, B) : (B, A);

        // First connection: 64 KiB, then silence (its replica will stop). Later connections: the whole body.
        var data = new byte[2 * 1024 * 1024];
        new Random(7).NextBytes(data);
        using var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var connections = 0;
        using var stop = new CancellationTokenSource();
        _ = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                var client = await listener.AcceptTcpClientAsync(stop.Token);
                var first = Interlocked.Increment(ref connections) == 1;
                _ = Task.Run(async () =>
                {
                    using (client)
                    {
                        await using var stream = client.GetStream();
                        _ = await stream.ReadAsync(new byte[4096], stop.Token);
                        await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {data.Length}\r\nConnection: close\r\n\r\n"), stop.Token);
                        await stream.WriteAsync(first ? data.AsMemory(0, 64 * 1024) : data, stop.Token);
                        if (first)
                            await new TaskCompletionSource().Task.WaitAsync(stop.Token); // silent until the test ends
                    }
                });
            }
        });
        var url = $"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}/orphan.iso";
        using var start = await leader.Http.PostAsJsonAsync("api/v1/images/import", new { url, name = "orphan.iso" });
        var id = (await start.Content.ReadFromJsonAsync<JsonObject>())!["id"]!.GetValue<string>();
        await Eventually.WaitAsync(async () => (await follower.Http.GetFromJsonAsync<JsonObject>($"api/v1/jobs/{id}"))!["state"]!.GetValue<string>() == "running",
            TimeSpan.FromSeconds(15), "the leader to start the import");

        await leader.StopAsync(); // hands the lease back; the job's heartbeat stops
        await Eventually.WaitAsync(() => Lease(follower).IsLeader, TimeSpan.FromSeconds(15), "the follower to become leader");
        // After 30 s without a heartbeat the new leader queues the job again and runs it from the start.
        var done = await Eventually.WaitAsync(async () =>
        {
            var job = await follower.Http.GetFromJsonAsync<JsonObject>($"api/v1/jobs/{id}");
            return job!["state"]!.GetValue<string>() is "succeeded" or "failed" ? job : null;
        }, TimeSpan.FromSeconds(60), "the orphaned import to be re-queued and finished");
        await stop.CancelAsync();

        Assert.Equal("succeeded", done["state"]!.GetValue<string>());
        Assert.Equal(data, await follower.Http.GetByteArrayAsync("api/v1/images/orphan.iso"));
        Assert.True(connections >= 2);
    }

    [Fact]
    public async Task LiveEvents_OneSequenceOnBothReplicas_AClientMovingFromAToB_GetsExactlyWhatItMissed()
    {
        MsdFleet.Coordinator.State.LeaderLease Lease(CoordinatorInstance c) => c.Services.GetRequiredService<MsdFleet.Coordinator.State.LeaderLease>();
        await Eventually.WaitAsync(() => Lease(A).IsLeader ^ Lease(B).IsLeader, TimeSpan.FromSeconds(10), "exactly one leader");
        await A.CreateAgentSecretAsync("rep-sse");
        using var onA = A.NewClient(CoordinatorInstance.AdminToken);
        using var onB = B.NewClient(CoordinatorInstance.AdminToken);
        onA.Timeout = onB.Timeout = Timeout.InfiniteTimeSpan;
        // The reference: a stream on B that stays open throughout.
        await using var reference = await LiveEventsTests.OpenAsync(onB, null);
        Assert.Equal("hello", (await LiveEventsTests.NextAsync(reference)).EventType);
        var moving = await LiveEventsTests.OpenAsync(onA, null);
        Assert.Equal("hello", (await LiveEventsTests.NextAsync(moving)).EventType);

        (await A.Http.PutAsync("api/v1/images/sse.img", new ByteArrayContent(new byte[5000]))).EnsureSuccessStatusCode();
        (await B.SetDriveAsync("rep-sse", 0, new { image = "sse.img", mode = "flash" })).EnsureSuccessStatusCode();
        var seen = new List<(string?, string, string)>();
        for (var i = 0; i < 2; i++)
        {
            var e = await LiveEventsTests.NextAsync(moving);
            seen.Add((e.EventId, e.EventType, e.Data));
        }
        await moving.DisposeAsync();

        // While the client moves: one change through each replica.
        (await A.SetDriveAsync("rep-sse", 0, new { image = (string?)null })).EnsureSuccessStatusCode();
        (await B.Http.DeleteAsync("api/v1/images/sse.img")).EnsureSuccessStatusCode();
        await using var resumed = await LiveEventsTests.OpenAsync(onB, long.Parse(seen[^1].Item1!, System.Globalization.CultureInfo.InvariantCulture));
        Assert.False(System.Text.Json.Nodes.JsonNode.Parse((await LiveEventsTests.NextAsync(resumed)).Data)!["reset"]!.GetValue<bool>());
        (await A.Http.PutAsync("api/v1/images/sse-after.img", new ByteArrayContent(new byte[3000]))).EnsureSuccessStatusCode();
        while (seen[^1].Item3 != """{"name":"sse-after.img","action":"committed"}""")
        {
            var e = await LiveEventsTests.NextAsync(resumed);
            seen.Add((e.EventId, e.EventType, e.Data));
        }

        var expected = new List<(string?, string, string)>();
        while (expected.Count < seen.Count)
        {
            var e = await LiveEventsTests.NextAsync(reference);
            expected.Add((e.EventId, e.EventType, e.Data));
        }
        // Same numbers, same events, same order on both replicas; nothing lost or repeated across the move.
        Assert.Equal(expected, seen);
        Assert.True(seen.Count(e => e.Item2 == "image") == 3 && seen.Count(e => e.Item2 == "agent") >= 2, string.Join("\n", seen));
        var ids = seen.Select(e => long.Parse(e.Item1!, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(Enumerable.Range(0, ids.Count).Select(i => ids[0] + i), ids);
    }

    [Fact]
    public async Task CookieIssuedByA_WorksOnB_LoggedOutOnA_RefusedByB_AndAnAgentDisabledOnA_RefusedByB()
    {
        const string password = "correct horse battery staple";
        (await A.Http.PostAsJsonAsync("api/v1/users", new { name = "carol", password, role = "viewer" })).EnsureSuccessStatusCode();
        using var browser = new HttpClient(new SocketsHttpHandler { UseCookies = false });
        using var login = await browser.PostAsJsonAsync(new Uri(A.BaseUrl, "api/v1/session/login"), new { username = "carol", password });
        Assert.True(login.IsSuccessStatusCode, await login.Content.ReadAsStringAsync());
        var cookie = string.Join("; ", login.Headers.GetValues("Set-Cookie").Select(h => h.Split(';')[0]));
        var csrf = (await login.Content.ReadFromJsonAsync<JsonObject>())!["csrfToken"]!.GetValue<string>();
        async Task<HttpStatusCode> SendAsync(CoordinatorInstance on, HttpMethod method, string path, string? csrfToken = null)
        {
            using var request = new HttpRequestMessage(method, new Uri(on.BaseUrl, path));
            request.Headers.Add("Cookie", cookie);
            if (csrfToken is not null)
                request.Headers.Add("X-CSRF-Token", csrfToken);
            using var response = await browser.SendAsync(request);
            return response.StatusCode;
        }
        Assert.Equal(HttpStatusCode.OK, await SendAsync(B, HttpMethod.Get, "api/v1/images")); // no sticky sessions needed
        Assert.Equal(HttpStatusCode.NoContent, await SendAsync(A, HttpMethod.Post, "api/v1/session/logout", csrf));
        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync(B, HttpMethod.Get, "api/v1/images"));

        var secret = await A.CreateAgentSecretAsync("rep-05");
        using var agent = new HttpClient { BaseAddress = B.BaseUrl };
        agent.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Basic",
            Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes("rep-05:" + secret)));
        Assert.Equal(HttpStatusCode.OK, (await agent.GetAsync("api/v1/signing-key")).StatusCode);
        (await A.Http.PostAsync("api/v1/agents/rep-05/disable", null)).EnsureSuccessStatusCode();
        Assert.Equal(HttpStatusCode.Unauthorized, (await agent.GetAsync("api/v1/signing-key")).StatusCode);
    }

    [Fact]
    public async Task LabelsSetOnA_SelectedOnB()
    {
        await A.CreateAgentSecretAsync("rep-06");
        using (var put = await A.Http.PutAsJsonAsync("api/v1/agents/rep-06/labels", new { labels = new Dictionary<string, string> { ["site"] = "ams1" } }))
            Assert.True(put.IsSuccessStatusCode, await put.Content.ReadAsStringAsync());
        await Eventually.WaitAsync(async () => (await B.Http.GetFromJsonAsync<JsonArray>("api/v1/agents?selector=site%3Dams1"))!.Count == 1,
            TimeSpan.FromSeconds(5), "B to select the agent by the label A set");
    }

    [Fact]
    public async Task Rollout_To200AgentsIn4Sites_NeverOverThePerSiteCap_SurvivesABrokerRestart_TheLeaderStopping_And10PercentGoingAway_EachAgentOnceNeverBackwards()
    {
        MsdFleet.Coordinator.State.LeaderLease Lease(CoordinatorInstance c) => c.Services.GetRequiredService<MsdFleet.Coordinator.State.LeaderLease>();
        await Eventually.WaitAsync(() => Lease(A).IsLeader ^ Lease(B).IsLeader, TimeSpan.FromSeconds(10), "exactly one leader");
        var (leader, follower) = Lease(A).IsLeader ? (A, B) : (B, A);
        var key = System.Security.Cryptography.ECDsa.Create();
        key.ImportSubjectPublicKeyInfo(Convert.FromBase64String((await follower.Http.GetFromJsonAsync<JsonObject>("api/v1/signing-key"))!["publicKey"]!.GetValue<string>()), out _);
        string[] sites = ["ams1", "fra2", "lon3", "par4"];
        var agents = new List<(string, string, IReadOnlyDictionary<string, string>?)>();
        await Parallel.ForEachAsync(Enumerable.Range(0, 200), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (i, _) =>
        {
            var id = $"fleet-{i:D3}";
            var secret = await (i % 2 == 0 ? A : B).CreateAgentSecretAsync(id);
            using var put = await (i % 2 == 0 ? B : A).Http.PutAsJsonAsync($"api/v1/agents/{id}/labels", new { labels = new Dictionary<string, string> { ["site"] = sites[i % 4] } }, CancellationToken.None);
            put.EnsureSuccessStatusCode();
            lock (agents)
                agents.Add((id, secret, null));
        });
        var (path, _) = await TestImages.CreateAsync(_work, "fleet.iso", 512 * 1024, seed: 93);
        var digest = (await A.UploadAsync("fleet.iso", path))["digest"]!.GetValue<string>();
        await using var fleet = new MsdFleet.FleetSimulator.SimulatedFleet(agents, _mosquitto!.Url, new MsdFleet.Protocol.Naming.TopicNames(A.TopicPrefix), key);
        // Pulls per site, as the simulated agents see them (a pull from the first report with a transfer to the report without):
        // never more than the per-site cap, whatever happens to the broker or the leader. (Without the cap the first wave alone
        // would pull 5 per site at once: its 20 agents are 5 of each site, and 25 may pull.)
        var pullingBySite = sites.ToDictionary(s => s, _ => new HashSet<string>());
        var maxBySite = sites.ToDictionary(s => s, _ => 0);
        foreach (var agent in fleet.Agents)
        {
            agent.PullTime = TimeSpan.FromMilliseconds(100);
            var site = sites[int.Parse(agent.Id[^3..], System.Globalization.CultureInfo.InvariantCulture) % 4];
            agent.Reported += (a, report) =>
            {
                lock (pullingBySite)
                {
                    if (report.Transfers.Count > 0)
                        pullingBySite[site].Add(a.Id);
                    else
                        pullingBySite[site].Remove(a.Id);
                    maxBySite[site] = Math.Max(maxBySite[site], pullingBySite[site].Count);
                }
            };
        }
        await fleet.ConnectAsync();
        await Eventually.WaitAsync(async () => (await B.Http.GetFromJsonAsync<JsonObject>("api/v1/fleet/summary"))!["counts"]!["online"]!.GetValue<long>() == 200,
            TimeSpan.FromSeconds(60), "200 simulated agents online");

        using var create = await follower.Http.PostAsJsonAsync("api/v1/rollouts", new
        {
            name = "fleet", image = "fleet.iso", mode = "cdrom", selector = "site in (ams1,fra2,lon3,par4)", waves = new object[] { "10%", "50%", "100%" },
            maxConcurrentPulls = 25, maxConcurrentPullsPerSite = 3, failureThreshold = new { percent = 5, minExecuted = 10 }, executionTimeoutSeconds = 300,
        });
        Assert.True(create.IsSuccessStatusCode, await create.Content.ReadAsStringAsync());
        var id = (await create.Content.ReadFromJsonAsync<JsonObject>())!["id"]!.GetValue<string>();
        async Task<int> SucceededAsync(CoordinatorInstance on) =>
            (await on.Http.GetFromJsonAsync<JsonObject>($"api/v1/rollouts/{id}"))!["counts"]!["succeeded"]!.GetValue<int>();

        await Eventually.WaitAsync(async () => await SucceededAsync(follower) >= 30, TimeSpan.FromSeconds(60), "30 agents done");
        await _mosquitto.RestartAsync(); // every session and retained message gone; agents and replicas reconnect
        var away = fleet.Agents.Where((_, i) => i % 10 == 7).ToList(); // 10 %, in every wave
        foreach (var agent in away)
            agent.Vanish();
        // The second wave cannot end while they are away (it waits for them): 60 of its others are done meanwhile.
        await Eventually.WaitAsync(async () => await SucceededAsync(follower) >= 60, TimeSpan.FromSeconds(90), "60 agents done");
        await leader.StopAsync(); // the other replica takes the lease over and carries on
        foreach (var agent in away)
            await agent.ConnectAsync(CancellationToken.None);
        var done = await Eventually.WaitAsync(async () =>
        {
            var view = (await follower.Http.GetFromJsonAsync<JsonObject>($"api/v1/rollouts/{id}"))!;
            return view["state"]!.GetValue<string>() is "succeeded" or "finished" or "failed" ? view : null;
        }, TimeSpan.FromSeconds(120), "the rollout to end on the surviving replica", () =>
        {
            var stuck = follower.Http.GetFromJsonAsync<JsonArray>($"api/v1/rollouts/{id}/executions?state=pulling").GetAwaiter().GetResult()!;
            return string.Join("\n", stuck.Select(e =>
            {
                var agent = fleet[e!["agentId"]!.GetValue<string>()];
                var view = follower.GetAgentAsync(agent.Id).GetAwaiter().GetResult()!;
                return $"{agent.Id}: execution gen {e["generation"]}; simulator connected={agent.IsConnected} applied={agent.AppliedGeneration} " +
                    $"rejected=[{string.Join("; ", agent.Rejected)}]; coordinator sees online={view["online"]} applied={view["appliedGeneration"]} " +
                    $"desired={view["desired"]?["generation"]} drives={view["drives"]?.ToJsonString()}";
            }));
        });

        Assert.Equal("succeeded", done["state"]!.GetValue<string>());
        Assert.Equal(200, done["counts"]!["succeeded"]!.GetValue<int>());
        Assert.True(Lease(follower).IsLeader);
        // Waves in order; no agent ever took an older generation; every agent was assigned exactly once.
        Assert.All(fleet.Agents, a => Assert.Empty(a.Rejected));
        Assert.All(fleet.Agents, a => Assert.Equal(a.AppliedGenerations.Order(), a.AppliedGenerations));
        var mounts = new List<JsonNode?>();
        for (string? url = $"api/v1/audit?actor=rollout:{id}&action=drive.mount&limit=500"; url is not null;)
        {
            using var page = await follower.Http.GetAsync(url);
            mounts.AddRange((await page.Content.ReadFromJsonAsync<JsonArray>())!);
            url = page.Headers.TryGetValues("Link", out var link) ? link.Single().Split('<', '>')[1].TrimStart('/') : null;
        }
        Assert.Equal(200, mounts.Count);
        Assert.Equal(200, mounts.Select(m => m!["target"]!.GetValue<string>()).Distinct().Count());
        lock (pullingBySite)
        {
            Assert.All(maxBySite, m => Assert.InRange(m.Value, 1, 3));
        }
    }

    [Fact]
    public async Task TokenRevokedOnA_RefusedByB_AtOnce_AndEnrollmentRedeemedOnce()
    {
        using var create = await A.Http.PostAsJsonAsync("api/v1/tokens", new { name = "ci", role = "operator" });
        Assert.True(create.IsSuccessStatusCode, await create.Content.ReadAsStringAsync());
        var created = (await create.Content.ReadFromJsonAsync<JsonObject>())!;
        using var viaB = B.NewClient(created["token"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.OK, (await viaB.GetAsync("api/v1/images")).StatusCode);
        using (var revoke = await A.Http.DeleteAsync($"api/v1/tokens/{created["id"]!.GetValue<string>()}"))
            Assert.True(revoke.IsSuccessStatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await viaB.GetAsync("api/v1/images")).StatusCode);

        using var enroll = await A.Http.PostAsJsonAsync("api/v1/enrollments", new { agentId = "rep-03" });
        Assert.True(enroll.IsSuccessStatusCode, await enroll.Content.ReadAsStringAsync());
        var token = (await enroll.Content.ReadFromJsonAsync<JsonObject>())!["token"]!.GetValue<string>();
        var answers = await Task.WhenAll(Enumerable.Range(0, 6).Select(async i =>
        {
            using var client = (i % 2 == 0 ? A : B).NewClient(token);
            using var redeem = await client.PostAsync("api/v1/enroll", null);
            return redeem.StatusCode;
        }));
        Assert.Single(answers, s => s == HttpStatusCode.OK);
    }
}
