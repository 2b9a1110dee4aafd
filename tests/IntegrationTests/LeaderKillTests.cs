using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using Dapper;
using MsdFleet.Coordinator.Tests.State;
using MsdFleet.IntegrationTests.Infrastructure;
using Npgsql;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// Two Coordinator processes on one PostgreSQL, one S3 bucket (Swift) and one Mosquitto; the leader is
/// killed with SIGKILL in the middle of a garbage collection — after it wrote a repacked pack, before it
/// deleted the old one. The other takes over within the lease's TTL, finishes the collection, and every
/// image still downloads bit-identical.
/// </summary>
[Collection(ReplicaServers.Name)]
public sealed class LeaderKillTests(PostgresServer postgres, SwiftServer swift)
{
    [Fact]
    public async Task LeaderKilledMidGc_TheOtherTakesOver_FinishesIt_EveryImageStillBitIdentical()
    {
        var work = TestPaths.NewTempDir("leader-kill");
        await using var mosquitto = await MosquittoBroker.StartAsync();
        var database = await postgres.CreateDatabaseAsync();
        var storage = swift.Options();
        var shared = SharedArgs(database, storage, mosquitto, $"kill{Guid.NewGuid():N}"[..30] + "/v1");
        await using var first = await CoordinatorProcess.StartAsync(shared);
        await using var second = await CoordinatorProcess.StartAsync(shared);
        await using var sql = new NpgsqlConnection(database);
        await sql.OpenAsync();
        Task<CoordinatorProcess?> LeaderAsync(params CoordinatorProcess[] candidates) => LeaseHolderAsync(sql, candidates);
        var leader = await Eventually.WaitAsync(() => LeaderAsync(first, second), TimeSpan.FromSeconds(20), "a leader");
        var survivor = leader == first ? second : first;
        using var viaLeader = leader.NewClient();
        using var viaSurvivor = survivor.NewClient();

        // "old" goes; "kept" shares its first half, so old's packs hold live and dead chunks: GC repacks them.
        var old = new byte[6 * 1024 * 1024];
        new Random(17).NextBytes(old);
        var kept = old.AsSpan(0, 3 * 1024 * 1024).ToArray().Concat(RandomBytes(3 * 1024 * 1024, 18)).ToArray();
        var other = RandomBytes(2 * 1024 * 1024 + 5, 19);
        (await viaSurvivor.PutAsync("api/v1/images/old.img", new ByteArrayContent(old))).EnsureSuccessStatusCode();
        var oldPacks = (await sql.QueryAsync<string>("SELECT pack_id FROM packs")).ToHashSet();
        Assert.NotEmpty(oldPacks);
        (await viaSurvivor.PutAsync("api/v1/images/kept.img", new ByteArrayContent(kept))).EnsureSuccessStatusCode();
        (await viaLeader.PutAsync("api/v1/images/other.img", new ByteArrayContent(other))).EnsureSuccessStatusCode();
        (await viaLeader.DeleteAsync("api/v1/images/old.img")).EnsureSuccessStatusCode();
        var before = (await sql.QueryAsync<string>("SELECT pack_id FROM packs")).ToHashSet();

        // Hold the registry rows of old's packs: the leader's GC repacks the first, then waits on deleting it.
        await using (var hold = await sql.BeginTransactionAsync())
        {
            await sql.ExecuteAsync("SELECT pack_id FROM packs WHERE pack_id = ANY(@ids) FOR UPDATE", new { ids = oldPacks.ToArray() }, hold);
            var gc = viaLeader.PostAsync("api/v1/gc", null); // answers only when done: never, here
            await Eventually.WaitAsync(async () => await new NpgsqlConnection(database).Using(c => c.ExecuteScalarAsync<long>(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM packs%'")) == 1,
                TimeSpan.FromSeconds(30), "the leader's GC to wait on deleting a pack it repacked", () => leader.Log);
            // Truly in the middle: a repacked pack is written and registered, the pack it replaces still there.
            var during = (await new NpgsqlConnection(database).Using(c => c.QueryAsync<string>("SELECT pack_id FROM packs"))).ToHashSet();
            Assert.NotEmpty(during.Except(before));
            Assert.Superset(oldPacks, during);

            await leader.KillAsync();
            await Assert.ThrowsAnyAsync<HttpRequestException>(() => gc);
            await hold.RollbackAsync();
        }

        // The survivor leads within the 15 s TTL (well inside the 30 s promised) and collects what is left.
        await Eventually.WaitAsync(async () => await LeaderAsync(survivor) is not null, TimeSpan.FromSeconds(30), "the survivor to become leader", () => survivor.Log);
        await AssertImagesAsync(viaSurvivor, kept, other);
        using (var collect = await viaSurvivor.PostAsync("api/v1/gc", null))
            Assert.True(collect.StatusCode == HttpStatusCode.OK, await collect.Content.ReadAsStringAsync());
        var after = (await sql.QueryAsync<string>("SELECT pack_id FROM packs")).ToHashSet();
        Assert.Empty(after.Intersect(oldPacks));
        using var bucket = await swift.CreateStoreAsync(storage.S3.Bucket);
        var objects = new List<string>();
        await foreach (var key in bucket.ListAsync(MsdFleet.Coordinator.Storage.ObjectKeys.PacksPrefix, CancellationToken.None))
            objects.Add(key);
        foreach (var pack in oldPacks)
            Assert.DoesNotContain(MsdFleet.Coordinator.Storage.ObjectKeys.Pack(pack), objects);
        Assert.Equal(after.Count * 2, objects.Count); // every registered pack has its data and index, nothing else is left
        await AssertImagesAsync(viaSurvivor, kept, other);
        Assert.Equal(HttpStatusCode.NotFound, (await viaSurvivor.GetAsync("api/v1/images/old.img")).StatusCode);

        // And a replica started now (a fresh process: nothing cached) serves them too.
        await using var third = await CoordinatorProcess.StartAsync(shared);
        using var viaThird = third.NewClient();
        await AssertImagesAsync(viaThird, kept, other);
        Directory.Delete(work, true);
    }

    /// <summary>
    /// A rollout to 60 simulated agents; the leader process is killed with SIGKILL while it assigns them. The survivor takes
    /// the lease over and finishes the rollout from the database: every agent attached, each assigned exactly once (one audit
    /// record each), none ever offered an older generation.
    /// </summary>
    [Fact]
    public async Task LeaderKilledMidRollout_TheOtherFinishesIt_EachAgentAssignedOnce_NeverBackwards()
    {
        await using var mosquitto = await MosquittoBroker.StartAsync();
        var database = await postgres.CreateDatabaseAsync();
        var prefix = $"roll{Guid.NewGuid():N}"[..12] + "/v1";
        var shared = SharedArgs(database, swift.Options(), mosquitto, prefix);
        await using var first = await CoordinatorProcess.StartAsync(shared);
        await using var second = await CoordinatorProcess.StartAsync(shared);
        await using var sql = new NpgsqlConnection(database);
        await sql.OpenAsync();
        Task<CoordinatorProcess?> LeaderAsync(params CoordinatorProcess[] candidates) => LeaseHolderAsync(sql, candidates);
        var leader = await Eventually.WaitAsync(() => LeaderAsync(first, second), TimeSpan.FromSeconds(20), "a leader");
        var survivor = leader == first ? second : first;
        using var viaSurvivor = survivor.NewClient();

        var agents = new List<(string, string, IReadOnlyDictionary<string, string>?)>();
        for (var i = 0; i < 60; i++)
        {
            var agentId = $"kill-{i:D2}";
            using var created = await viaSurvivor.PostAsync($"api/v1/agents/{agentId}/credentials", null);
            created.EnsureSuccessStatusCode();
            var secret = (await created.Content.ReadFromJsonAsync<System.Text.Json.Nodes.JsonObject>())!["secret"]!.GetValue<string>();
            using var labelled = await viaSurvivor.PutAsJsonAsync($"api/v1/agents/{agentId}/labels", new { labels = new Dictionary<string, string> { ["site"] = i % 2 == 0 ? "ams1" : "fra2" } });
            labelled.EnsureSuccessStatusCode();
            agents.Add((agentId, secret, null));
        }
        using var key = ECDsa.Create();
        key.ImportSubjectPublicKeyInfo(Convert.FromBase64String((await viaSurvivor.GetFromJsonAsync<System.Text.Json.Nodes.JsonObject>("api/v1/signing-key"))!["publicKey"]!.GetValue<string>()), out _);
        await using var fleet = new MsdFleet.FleetSimulator.SimulatedFleet(agents, mosquitto.Url, new MsdFleet.Protocol.Naming.TopicNames(prefix), key);
        foreach (var agent in fleet.Agents)
            agent.PullTime = TimeSpan.FromMilliseconds(300);
        await fleet.ConnectAsync();
        await Eventually.WaitAsync(async () => (await viaSurvivor.GetFromJsonAsync<System.Text.Json.Nodes.JsonObject>("api/v1/fleet/summary"))!["counts"]!["online"]!.GetValue<long>() == 60,
            TimeSpan.FromSeconds(30), "60 simulated agents online");
        (await viaSurvivor.PutAsync("api/v1/images/rollout.iso", new ByteArrayContent(RandomBytes(400_000, 23)))).EnsureSuccessStatusCode();

        using var create = await viaSurvivor.PostAsJsonAsync("api/v1/rollouts", new
        {
            name = "kill", image = "rollout.iso", mode = "cdrom", selector = "site in (ams1,fra2)", waves = new object[] { "10%", "100%" }, maxConcurrentPulls = 4,
            executionTimeoutSeconds = 120,
        });
        Assert.True(create.IsSuccessStatusCode, await create.Content.ReadAsStringAsync());
        var id = (await create.Content.ReadFromJsonAsync<System.Text.Json.Nodes.JsonObject>())!["id"]!.GetValue<string>();
        async Task<System.Text.Json.Nodes.JsonObject> ViewAsync() => (await viaSurvivor.GetFromJsonAsync<System.Text.Json.Nodes.JsonObject>($"api/v1/rollouts/{id}"))!;
        // In the middle: some done, some pulling, most queued.
        await Eventually.WaitAsync(async () => (await ViewAsync())["counts"]!["succeeded"]!.GetValue<int>() >= 12, TimeSpan.FromSeconds(60), "12 agents done");
        var atKill = await ViewAsync();
        Assert.True(atKill["counts"]!["queued"]!.GetValue<int>() > 0, atKill.ToJsonString());
        await leader.KillAsync();

        await Eventually.WaitAsync(async () => await LeaderAsync(survivor) is not null, TimeSpan.FromSeconds(30), "the survivor to become leader", () => survivor.Log);
        var done = await Eventually.WaitAsync(async () => (await ViewAsync()) is var v && v["state"]!.GetValue<string>() is "succeeded" or "finished" or "failed" ? v : null,
            TimeSpan.FromSeconds(90), "the rollout to end on the survivor", () => survivor.Log);
        Assert.Equal("succeeded", done["state"]!.GetValue<string>());
        Assert.Equal(60, done["counts"]!["succeeded"]!.GetValue<int>());
        Assert.All(fleet.Agents, a => Assert.Empty(a.Rejected));
        Assert.All(fleet.Agents, a => Assert.Equal(a.AppliedGenerations.Order(), a.AppliedGenerations));
        var mounts = await sql.QueryAsync<string>("SELECT target FROM audit_log WHERE actor = @actor AND action = 'drive.mount'", new { actor = $"rollout:{id}" });
        Assert.Equal(60, mounts.Count());
        Assert.Equal(60, mounts.Distinct().Count());
    }

    /// <summary>Two replicas' shared settings: one PostgreSQL, one bucket, one Mosquitto, one topic prefix.</summary>
    private static string[] SharedArgs(string database, MsdFleet.Coordinator.Storage.ObjectStoreOptions storage, MosquittoBroker mosquitto, string prefix) =>
    [
        "--State:Provider=postgres", $"--State:ConnectionString={database}", .. CoordinatorInstance.StorageArgs(storage),
        $"--Mqtt:Broker={mosquitto.Url}", $"--Mqtt:TopicPrefix={prefix}",
    ];

    /// <summary>Which of <paramref name="candidates"/> holds the unexpired leader lease (by the pid in its holder id), if any.</summary>
    private static async Task<CoordinatorProcess?> LeaseHolderAsync(NpgsqlConnection sql, CoordinatorProcess[] candidates)
    {
        var holder = await sql.QuerySingleOrDefaultAsync<string>("SELECT holder FROM leases WHERE name = 'leader' AND expires_at_ms > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT");
        return candidates.SingleOrDefault(c => holder?.Split("/")[1] == c.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    private static async Task AssertImagesAsync(HttpClient client, byte[] kept, byte[] other)
    {
        Assert.Equal(SHA256.HashData(kept), SHA256.HashData(await client.GetByteArrayAsync("api/v1/images/kept.img")));
        Assert.Equal(SHA256.HashData(other), SHA256.HashData(await client.GetByteArrayAsync("api/v1/images/other.img")));
    }

    private static byte[] RandomBytes(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }
}

internal static class NpgsqlConnectionExtensions
{
    /// <summary>Opens, runs, disposes: for one-off probes beside a connection busy in a transaction.</summary>
    public static async Task<T> Using<T>(this NpgsqlConnection connection, Func<NpgsqlConnection, Task<T>> use)
    {
        await using (connection)
        {
            await connection.OpenAsync();
            return await use(connection);
        }
    }
}
