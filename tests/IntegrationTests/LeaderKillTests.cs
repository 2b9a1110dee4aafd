using System.Net;
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
        string[] shared =
        [
            "--State:Provider=postgres", $"--State:ConnectionString={database}", .. CoordinatorInstance.StorageArgs(storage),
            $"--Mqtt:Broker={mosquitto.Url}", $"--Mqtt:TopicPrefix=kill{Guid.NewGuid():N}"[..30] + "/v1",
        ];
        await using var first = await CoordinatorProcess.StartAsync(shared);
        await using var second = await CoordinatorProcess.StartAsync(shared);
        await using var sql = new NpgsqlConnection(database);
        await sql.OpenAsync();
        async Task<CoordinatorProcess?> LeaderAsync(params CoordinatorProcess[] candidates)
        {
            var holder = await sql.QuerySingleOrDefaultAsync<string>("SELECT holder FROM leases WHERE name = 'leader' AND expires_at_ms > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT");
            return candidates.SingleOrDefault(c => holder?.Split("/")[1] == c.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
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
