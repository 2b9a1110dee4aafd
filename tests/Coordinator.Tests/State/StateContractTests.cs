using System.Collections.Concurrent;
using System.Security.Claims;
using Dapper;
using Microsoft.AspNetCore.Authentication;
using MsdFleet.Coordinator.Auth;
using Microsoft.Extensions.Options;
using MsdFleet.Coordinator.Catalog;
using MsdFleet.Coordinator.Fleet;
using MsdFleet.Coordinator.State;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.Coordinator.Tests.State;

/// <summary>
/// What every state database must do, run against SQLite and a real PostgreSQL. "Two replicas" are two
/// independent sets of stores over the same database, as two Coordinator processes would be.
/// </summary>
public abstract class StateContractTests : IAsyncLifetime
{
    private static readonly System.Text.Json.JsonSerializerOptions WebJson = new(System.Text.Json.JsonSerializerDefaults.Web);
    private readonly string _root = Path.Combine(Path.GetTempPath(), "msdfleet-state-" + Guid.NewGuid().ToString("N"));
    private FileSystemObjectStore? _store;
    private StateOptions _options = new();

    protected abstract Task<StateOptions> NewDatabaseAsync(string folder);

    protected FileSystemObjectStore Store => _store!;

    private IOptions<ObjectStoreOptions> StoreOptions => Options.Create(new ObjectStoreOptions { Path = Path.Combine(_root, "store") });

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(_root);
        _store = new FileSystemObjectStore(Path.Combine(_root, "store"));
        _options = await NewDatabaseAsync(_root);
    }

    public Task DisposeAsync()
    {
        _store?.Dispose();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_root, true);
        return Task.CompletedTask;
    }

    private sealed record Replica(StateDatabase Db, ImageCatalog Catalog, DesiredStateStore Desired);

    private async Task<Replica> StartReplicaAsync()
    {
        var db = new StateDatabase(Options.Create(_options));
        await StateMigrations.ApplyAsync(db, CancellationToken.None);
        return new Replica(db, new ImageCatalog(db, Store, TimeProvider.System), new DesiredStateStore(db, TimeProvider.System));
    }

    private static CatalogEntry Entry(string name, string digest) => new()
    {
        Name = name, Digest = digest, Size = 1, Sha256 = new string('0', 64), ChunkCount = 1, CreatedAt = DateTimeOffset.UnixEpoch,
    };

    private static string Digest(int n) => "sha256:" + n.ToString("x64", System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public async Task Migrations_AppliedOnce_EvenWhenReplicasStartTogether()
    {
        var dbs = Enumerable.Range(0, 4).Select(_ => new StateDatabase(Options.Create(_options))).ToList();
        var applied = await Task.WhenAll(dbs.Select(db => StateMigrations.ApplyAsync(db, CancellationToken.None)));

        Assert.Equal(StateMigrations.All.Select(m => m.Version), applied.SelectMany(a => a).Order());
        Assert.Empty(await StateMigrations.ApplyAsync(dbs[0], CancellationToken.None));
    }

    [Fact]
    public async Task Migrations_DatabaseFromNewerVersion_IsRefusedWithAClearMessage()
    {
        var a = await StartReplicaAsync();
        await a.Db.WriteAsync((c, t) => c.ExecuteAsync("INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (9999, 'future', 0)", transaction: t), default);

        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => StateMigrations.ApplyAsync(a.Db, CancellationToken.None));
        Assert.Contains("newer than this Coordinator knows", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DesiredState_ConcurrentChangesOnTwoReplicas_NoneLost_GenerationsStrictlyIncreasing()
    {
        var a = await StartReplicaAsync();
        var b = await StartReplicaAsync();
        var generations = new ConcurrentBag<long>();
        // Each change adds 1 to the bandwidth it read: a lost update would leave the total short.
        await Parallel.ForEachAsync(Enumerable.Range(0, 100), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (i, ct) =>
        {
            var replica = i % 2 == 0 ? a : b;
            var state = await replica.Desired.ChangeAsync("rack1-01",
                change => Task.FromResult(DesiredStateStore.DesiredContent.Of(change.Current) with { MaxBytesPerSecond = (change.Current?.MaxBytesPerSecond ?? 0) + 1 }), ct);
            generations.Add(state.Generation);
        });

        Assert.Equal(Enumerable.Range(1, 100).Select(g => (long)g), generations.Order());
        var fresh = await StartReplicaAsync();
        await fresh.Desired.LoadAsync(default);
        Assert.Equal(100, fresh.Desired.Get("rack1-01")!.Generation);
        Assert.Equal(100, fresh.Desired.Get("rack1-01")!.MaxBytesPerSecond);
    }

    [Fact]
    public async Task DesiredState_PublishedFromTwoReplicas_NeverAnOlderGenerationAfterANewerOne()
    {
        var a = await StartReplicaAsync();
        var b = await StartReplicaAsync();
        var published = new ConcurrentQueue<long>();
        await Parallel.ForEachAsync(Enumerable.Range(0, 60), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (i, ct) =>
        {
            var replica = i % 2 == 0 ? a : b;
            await replica.Desired.SetBandwidthAsync("rack1-02", i, ct);
            await replica.Desired.PublishLatestAsync("rack1-02", s =>
            {
                published.Enqueue(s.Generation);
                return Task.CompletedTask;
            }, force: false, ct);
        });

        var order = published.ToList();
        Assert.Equal(order.Order(), order);
        Assert.Equal(order.Distinct(), order);
        Assert.Equal(60, order[^1]); // the last one out is the newest
    }

    [Fact]
    public async Task Catalog_SameNameCommittedConcurrently_ExactlyOneWins()
    {
        var a = await StartReplicaAsync();
        var b = await StartReplicaAsync();
        var results = await Task.WhenAll(Enumerable.Range(0, 20).Select(async i =>
        {
            try
            {
                await (i % 2 == 0 ? a : b).Catalog.CommitAsync(Entry("debian.iso", Digest(i)), replace: false, default);
                return true;
            }
            catch (ApiException ex) when (ex.Code == "image-exists")
            {
                return false;
            }
        }));

        Assert.Single(results, r => r);
        Assert.Single(await b.Catalog.ListAsync(default));
        await a.Catalog.CommitAsync(Entry("debian.iso", Digest(99)), replace: true, default);
        Assert.Equal(Digest(99), (await b.Catalog.GetAsync("debian.iso", default))!.Digest);
    }

    [Fact]
    public async Task Catalog_DeleteRacingAnAssignment_NeverDeletesAnImageInUse()
    {
        var a = await StartReplicaAsync();
        var b = await StartReplicaAsync();
        for (var i = 0; i < 20; i++)
        {
            var name = $"img{i}.iso";
            await a.Catalog.CommitAsync(Entry(name, Digest(1000 + i)), replace: false, default);
            var assign = Task.Run(async () =>
            {
                try
                {
                    await b.Desired.ChangeAsync($"agent{i}", async change =>
                    {
                        var entry = await b.Catalog.GetForShareAsync(change.Connection, change.Transaction, name, default) ?? throw CatalogEndpoints.ImageNotFound(name);
                        return DesiredStateStore.WithDrive(change.Current, new DesiredDrive { Index = 0, ImageDigest = entry.Digest, ImageName = name, Mode = DriveMode.Cdrom, Connected = true });
                    }, default);
                    return true;
                }
                catch (ApiException ex) when (ex.Code == "image-not-found")
                {
                    return false;
                }
            });
            var delete = Task.Run(async () =>
            {
                try
                {
                    await a.Catalog.DeleteUnusedAsync(name, default);
                    return true;
                }
                catch (ApiException ex) when (ex.Code == "image-in-use")
                {
                    return false;
                }
            });
            var (assigned, deleted) = (await assign, await delete);

            Assert.True(assigned ^ deleted, $"round {i}: assigned {assigned}, deleted {deleted}");
            Assert.Equal(assigned, await a.Catalog.GetAsync(name, default) is not null);
        }
    }

    [Fact]
    public async Task Import_StoreWrittenByEarlierVersion_IsImportedOnce()
    {
        var entry = Entry("old.iso", Digest(7));
        await Store.PutAsync(ObjectKeys.Legacy.Catalog(entry.Name), System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(entry, WebJson), default);
        var old = new DesiredState { Generation = 41, AgentId = "rack2-01", Drives = [new DesiredDrive { Index = 0, ImageDigest = entry.Digest, ImageName = entry.Name, Mode = DriveMode.Cdrom, Connected = true }] };
        await Store.PutAsync(ObjectKeys.Legacy.Desired("rack2-01"), ProtocolSerializer.Serialize(old), default);

        var db = new StateDatabase(Options.Create(_options));
        var desired = new DesiredStateStore(db, TimeProvider.System);
        var startup = new StateStartupService(db, Store, desired, TimeProvider.System, StoreOptions, Microsoft.Extensions.Logging.Abstractions.NullLogger<StateStartupService>.Instance);
        await startup.StartAsync(default);
        var catalog = new ImageCatalog(db, Store, TimeProvider.System);

        Assert.Equal(entry.Digest, (await catalog.GetAsync("old.iso", default))!.Digest);
        Assert.Equal(41, desired.Get("rack2-01")!.Generation);
        // The imported image is in use, and the next change continues the generations.
        var inUse = await Assert.ThrowsAsync<ApiException>(() => catalog.DeleteUnusedAsync("old.iso", default));
        Assert.Equal("image-in-use", inUse.Code);
        Assert.Equal(42, (await desired.SetBandwidthAsync("rack2-01", 5, default)).Generation);

        // A second start (or a second replica) imports nothing again: what was deleted since does not come back.
        await desired.SetDriveAsync("rack2-01", new DesiredDrive { Index = 0 }, default);
        await catalog.DeleteUnusedAsync("old.iso", default);
        await startup.StartAsync(default);
        Assert.Null(await catalog.GetAsync("old.iso", default));
        Assert.Equal(43, desired.Get("rack2-01")!.Generation);
    }

    [Fact]
    public async Task Prune_RemovesOnlyExpiredSessionsAndEnrollments()
    {
        var db = (await StartReplicaAsync()).Db;
        var now = DateTimeOffset.UtcNow;
        var sessions = new SessionTicketStore(db);
        AuthenticationTicket Ticket(DateTimeOffset expires) => new(new ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.Name, "ada")], "Cookies")),
            new AuthenticationProperties { ExpiresUtc = expires }, "Cookies");
        var live = await sessions.StoreAsync(Ticket(now.AddHours(1)));
        var dead = await sessions.StoreAsync(Ticket(now.AddHours(-1)));
        Assert.Equal(1, await sessions.PruneAsync(now, default));
        Assert.Equal("ada", (await sessions.RetrieveAsync(live))!.Principal.Identity!.Name);
        Assert.Null(await sessions.RetrieveAsync(dead));

        var clock = new ManualClock(now);
        var enrollments = new EnrollmentStore(db, clock);
        var (shortToken, _) = await enrollments.CreateAsync("short", TimeSpan.FromHours(1), "admin", default);
        var (longToken, _) = await enrollments.CreateAsync("long", TimeSpan.FromHours(48), "admin", default);
        clock.Now = now.AddHours(2);
        Assert.Equal(1, await enrollments.PruneAsync(clock.Now, default));
        Assert.Null(await enrollments.FindAsync(shortToken, default));
        Assert.Equal("long", (await enrollments.FindAsync(longToken, default))!.AgentId);
    }

    [Fact]
    public async Task Enrollment_RedeemedConcurrentlyOnTwoReplicas_ExactlyOnce()
    {
        var a = new EnrollmentStore((await StartReplicaAsync()).Db, TimeProvider.System);
        var b = new EnrollmentStore((await StartReplicaAsync()).Db, TimeProvider.System);
        for (var round = 0; round < 10; round++)
        {
            var (token, _) = await a.CreateAsync($"rack3-{round:00}", TimeSpan.FromHours(1), "admin", default);
            var redeemed = await Task.WhenAll(Enumerable.Range(0, 8).Select(i => Task.Run(() => (i % 2 == 0 ? a : b).ConsumeAsync(token, default))));
            Assert.Single(redeemed, r => r is not null);
        }
    }

    [Fact]
    public async Task Auth_RevokedOrDisabledOnOneReplica_RefusedByTheOtherAtOnce()
    {
        var (dbA, dbB) = ((await StartReplicaAsync()).Db, (await StartReplicaAsync()).Db);
        var (tokensA, tokensB) = (new TokenStore(dbA, TimeProvider.System), new TokenStore(dbB, TimeProvider.System));
        var token = SecretHash.NewSecret("msdf_");
        await tokensA.AddAsync(token, new ApiTokenRecord("ci", Roles.Operator, DateTimeOffset.UtcNow), default);
        Assert.Equal("ci", (await tokensB.FindAsync(token, default))!.Name);
        Assert.True(await tokensA.RevokeAsync(SecretHash.HashHex(token)[..16], default));
        Assert.Null(await tokensB.FindAsync(token, default));

        var (agentsA, agentsB) = (new AgentCredentialStore(dbA, TimeProvider.System), new AgentCredentialStore(dbB, TimeProvider.System));
        var secret = await agentsA.CreateOrRotateAsync("rack4-01", default);
        Assert.True(await agentsB.VerifyAsync("rack4-01", secret, default));
        Assert.True(await agentsA.SetDisabledAsync("rack4-01", true, default));
        Assert.False(await agentsB.VerifyAsync("rack4-01", secret, default));
        var rotated = await agentsB.CreateOrRotateAsync("rack4-01", default);
        Assert.False(await agentsA.VerifyAsync("rack4-01", secret, default));
        Assert.True(await agentsA.VerifyAsync("rack4-01", rotated, default));

        var (usersA, usersB) = (new UserStore(dbA, TimeProvider.System), new UserStore(dbB, TimeProvider.System));
        Assert.NotNull(await usersA.CreateAsync("ada", "correct horse battery", Roles.Viewer, default));
        Assert.Null(await usersB.CreateAsync("ada", "another long password", Roles.Admin, default)); // taken: never overwritten
        var stamp = (await usersB.FindAsync("ada", default))!.SecurityStamp;
        await usersA.UpdateAsync((await usersA.FindAsync("ada", default))!, password: null, role: Roles.Operator, default);
        Assert.NotEqual(stamp, (await usersB.FindAsync("ada", default))!.SecurityStamp);
        Assert.NotNull(await usersB.VerifyAsync("ada", "correct horse battery", default));
    }

    [Fact]
    public async Task Import_AuthOfAnEarlierVersion_KeepsUsersTokensAgentsAndSessions()
    {
        var token = SecretHash.NewSecret("msdf_");
        var tokenHash = SecretHash.HashHex(token);
        await Store.PutAsync(ObjectKeys.Legacy.Token(tokenHash), System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(
            new ApiTokenRecord("old-ci", Roles.Operator, DateTimeOffset.UtcNow) { Id = tokenHash[..16] }, WebJson), default);
        var agentSecret = SecretHash.NewSecret("msda_");
        await Store.PutAsync(ObjectKeys.Legacy.AgentCredentials("rack5-01"), System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(
            new AgentCredentialRecord("rack5-01", SecretHash.HashHex(agentSecret), DateTimeOffset.UtcNow), WebJson), default);
        var hasher = new Microsoft.AspNetCore.Identity.PasswordHasher<UserRecord>();
        var user = new UserRecord("grace", Roles.Admin, "", DateTimeOffset.UtcNow, "stamp");
        await Store.PutAsync(ObjectKeys.Legacy.User("grace"), System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(
            user with { PasswordHash = hasher.HashPassword(user, "an old long password") }, WebJson), default);
        var sessionKey = new string('a', 64);
        await Store.PutAsync(ObjectKeys.Legacy.Session(sessionKey), TicketSerializer.Default.Serialize(new AuthenticationTicket(
            new ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.Name, "grace")], "Cookies")), new AuthenticationProperties { ExpiresUtc = DateTimeOffset.UtcNow.AddHours(1) }, "Cookies")), default);

        var db = new StateDatabase(Options.Create(_options));
        await new StateStartupService(db, Store, new DesiredStateStore(db, TimeProvider.System), TimeProvider.System, StoreOptions,
            Microsoft.Extensions.Logging.Abstractions.NullLogger<StateStartupService>.Instance).StartAsync(default);

        Assert.Equal("old-ci", (await new TokenStore(db, TimeProvider.System).FindAsync(token, default))!.Name);
        Assert.True(await new AgentCredentialStore(db, TimeProvider.System).VerifyAsync("rack5-01", agentSecret, default));
        Assert.NotNull(await new UserStore(db, TimeProvider.System).VerifyAsync("grace", "an old long password", default));
        Assert.Equal("grace", (await new SessionTicketStore(db).RetrieveAsync(sessionKey))!.Principal.Identity!.Name);
    }

    [Fact]
    public async Task LiveEvents_ConcurrentWritersOnTwoReplicas_ATailerNeverSkipsANumber_AndPruneKeepsTheNewest()
    {
        var a = new LiveEventLog((await StartReplicaAsync()).Db);
        var b = new LiveEventLog((await StartReplicaAsync()).Db);
        Assert.Equal(0, await a.LastAsync(CancellationToken.None));
        // A tailer reading while 8 writers (4 per replica) append batches of 1–5: a number it has seen means
        // every smaller number is committed, so it reads 1, 2, 3 … with no gap and nothing twice.
        const int Writers = 8, Batches = 20;
        var tailed = new List<long>();
        using var done = new CancellationTokenSource();
        var tailer = Task.Run(async () =>
        {
            var last = 0L;
            while (true)
            {
                var finished = done.IsCancellationRequested;
                foreach (var e in await b.ReadAfterAsync(last, 100, CancellationToken.None))
                {
                    Assert.Equal(last + 1, e.Seq);
                    tailed.Add(e.Seq);
                    last = e.Seq;
                }
                if (finished && last == await b.LastAsync(CancellationToken.None))
                    return;
            }
        });
        await Task.WhenAll(Enumerable.Range(0, Writers).Select(w => Task.Run(async () =>
        {
            var log = w % 2 == 0 ? a : b;
            for (var i = 0; i < Batches; i++)
                await log.AppendAsync(Enumerable.Range(0, 1 + (i % 5)).Select(k => ("t", $"{{\"w\":{w},\"i\":{i},\"k\":{k}}}")).ToList(), CancellationToken.None);
        })));
        await done.CancelAsync();
        await tailer.WaitAsync(TimeSpan.FromSeconds(60));
        var total = Writers * Enumerable.Range(0, Batches).Sum(i => 1 + (i % 5));
        Assert.Equal(Enumerable.Range(1, total).Select(i => (long)i), tailed);
        // Each batch got consecutive numbers, in its own order.
        var all = await a.ReadAfterAsync(0, total, CancellationToken.None);
        foreach (var batch in all.GroupBy(e => e.Payload[..e.Payload.IndexOf(",\"k\"", StringComparison.Ordinal)]))
            Assert.Equal(Enumerable.Range(0, batch.Count()).Select(i => batch.First().Seq + i), batch.Select(e => e.Seq));

        Assert.Equal(total - 10, await a.PruneAsync(10, CancellationToken.None));
        Assert.Equal(Enumerable.Range(total - 9, 10).Select(i => (long)i), (await b.ReadAfterAsync(0, 100, CancellationToken.None)).Select(e => e.Seq));
        Assert.Equal(total, await b.LastAsync(CancellationToken.None));
    }

    [Fact]
    public async Task StoreBinding_ASecondDatabaseOnTheStore_OrTheDatabaseOnAnotherStore_IsRefusedBeforeAnythingIsWritten()
    {
        var db = (await StartReplicaAsync()).Db;
        await StoreBinding.CheckAsync(db, Store, "the store", default);
        await StoreBinding.CheckAsync(db, Store, "the store", default); // the same pair again: fine
        var marker = await Store.GetBytesAsync(ObjectKeys.StateBinding, 4096, default);

        var otherFolder = Path.Combine(_root, "other");
        Directory.CreateDirectory(otherFolder);
        var other = new StateDatabase(Options.Create(await NewDatabaseAsync(otherFolder)));
        await StateMigrations.ApplyAsync(other, default);
        var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => StoreBinding.CheckAsync(other, Store, "the store", default));
        Assert.Contains("belongs to another state database", refused.Message, StringComparison.Ordinal);
        Assert.Equal(marker, await Store.GetBytesAsync(ObjectKeys.StateBinding, 4096, default)); // the marker is untouched

        using var emptyStore = new FileSystemObjectStore(Path.Combine(_root, "empty-store"));
        var wrong = await Assert.ThrowsAsync<InvalidOperationException>(() => StoreBinding.CheckAsync(db, emptyStore, "the empty store", default));
        Assert.Contains("is not the one this state database", wrong.Message, StringComparison.Ordinal);
        Assert.Null(await emptyStore.GetBytesAsync(ObjectKeys.StateBinding, 4096, default));
        // The refused database binds to a store of its own.
        await StoreBinding.CheckAsync(other, emptyStore, "the empty store", default);
    }

    [Fact]
    public async Task LeaderLease_OneHolderAtATime_TakenOverAfterTheHolderStops_WithAHigherTerm()
    {
        var ttl = TimeSpan.FromSeconds(2);
        var log = Microsoft.Extensions.Logging.Abstractions.NullLogger<LeaderLease>.Instance;
        var a = new LeaderLease((await StartReplicaAsync()).Db, log, ttl);
        var b = new LeaderLease((await StartReplicaAsync()).Db, log, ttl);

        // Taken before the lease is granted: it cannot expire earlier than ttl after this, however slow the steps
        // below are on a loaded machine (timing from after them failed once when they took over 500 ms).
        var granted = DateTime.UtcNow;
        var won = await Task.WhenAll(a.RenewAsync(default), b.RenewAsync(default));
        Assert.Single(won, w => w);
        var (leader, other) = won[0] ? (a, b) : (b, a);
        await leader.EnsureLeaderAsync(default);
        Assert.False(await other.RenewAsync(default));
        await Assert.ThrowsAsync<NotLeaderException>(() => other.EnsureLeaderAsync(default));
        var term = leader.Term;

        // The leader stops renewing (killed): its lease runs out by the database's clock and the other takes it.
        var since = DateTime.UtcNow;
        while (!await other.RenewAsync(default))
            Assert.True(DateTime.UtcNow - since < ttl + TimeSpan.FromSeconds(10), "the other replica never took the expired lease");
        Assert.True(DateTime.UtcNow - granted >= ttl - TimeSpan.FromMilliseconds(500), "the lease was taken before it expired");
        Assert.True(other.Term > term);
        await Assert.ThrowsAsync<NotLeaderException>(() => leader.EnsureLeaderAsync(default));
        Assert.False(await leader.RenewAsync(default));
        Assert.Equal(other.Holder, await leader.CurrentHolderAsync(default));
    }

    [Fact]
    public async Task Audit_FilteredByActorActionTargetAndTime_PagedNewestFirstWithoutGapsOrRepeats()
    {
        var db = (await StartReplicaAsync()).Db;
        var clock = new ManualClock(DateTimeOffset.Parse("2026-12-01T08:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var audit = new AuditLog(db, clock);
        ClaimsPrincipal Who(string name, string role) => new(new ClaimsIdentity([new Claim(ClaimTypes.Name, name), new Claim(ClaimTypes.Role, role)], "test"));
        for (var i = 0; i < 25; i++)
        {
            clock.Now = clock.Now.AddMinutes(1);
            await audit.RecordAsync(Who(i % 2 == 0 ? "ada" : "grace", Roles.Operator), i % 3 == 0 ? "drive.mount" : "image.delete", $"rack1-{i % 5:00}/0", $"n{i}", default);
        }

        var ada = await audit.ReadAsync(new AuditQuery(Actor: "ada"), default);
        Assert.Equal(13, ada.Count);
        Assert.All(ada, e => Assert.Equal("ada", e.Actor));
        Assert.Equal(ada.OrderBy(e => e.Id), ada); // oldest first within a page
        var mounts = await audit.ReadAsync(new AuditQuery(Action: "drive.mount", Target: "rack1-00"), default); // an agent finds its drives
        Assert.Equal(["n0", "n15"], mounts.Select(e => e.Detail));
        var window = await audit.ReadAsync(new AuditQuery(Since: DateTimeOffset.Parse("2026-12-01T08:05:00Z", System.Globalization.CultureInfo.InvariantCulture),
            Until: DateTimeOffset.Parse("2026-12-01T08:08:00Z", System.Globalization.CultureInfo.InvariantCulture)), default);
        Assert.Equal(["n4", "n5", "n6"], window.Select(e => e.Detail));

        var seen = new List<string?>();
        long? before = null;
        while (true)
        {
            var page = await audit.ReadAsync(new AuditQuery(Limit: 10, Before: before), default);
            seen.InsertRange(0, page.Select(e => e.Detail));
            if (page.Count < 10)
                break;
            before = page[0].Id;
        }
        Assert.Equal(Enumerable.Range(0, 25).Select(i => $"n{i}"), seen);
    }

    [Fact]
    public async Task LoginThrottle_FailuresOnBothReplicasCount_LockHoldsOnBoth_UntilTheWindowEnds()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        var a = new LoginThrottle((await StartReplicaAsync()).Db, clock);
        var b = new LoginThrottle((await StartReplicaAsync()).Db, clock);
        await Task.WhenAll(Enumerable.Range(0, LoginThrottle.MaxFailures).Select(i => (i % 2 == 0 ? a : b).FailedAsync("ada", default)));

        Assert.NotNull(await a.LockedForAsync("ada", default));
        Assert.NotNull(await b.LockedForAsync("ada", default));
        Assert.Null(await b.LockedForAsync("grace", default));
        clock.Now += LoginThrottle.Window;
        Assert.Null(await a.LockedForAsync("ada", default));
        await b.FailedAsync("ada", default); // a new window starts at 1
        Assert.Null(await a.LockedForAsync("ada", default));
        Assert.Equal(1, await a.PruneAsync(clock.Now + LoginThrottle.Window, default));
    }

    [Fact]
    public async Task LoginThrottle_AttemptsFromOneAddressOnBothReplicas_CountTogether_AndTheWindowRunsOut()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        var a = new LoginThrottle((await StartReplicaAsync()).Db, clock);
        var b = new LoginThrottle((await StartReplicaAsync()).Db, clock);
        // Twice the limit at once, spread over both replicas: exactly the limit gets through.
        var answers = await Task.WhenAll(Enumerable.Range(0, 2 * LoginThrottle.MaxAttemptsPerAddress)
            .Select(i => (i % 2 == 0 ? a : b).AttemptFromAsync("192.0.2.7", default)));
        Assert.Equal(LoginThrottle.MaxAttemptsPerAddress, answers.Count(w => w is null));
        Assert.All(answers.Where(w => w is not null), w => Assert.InRange(w!.Value, TimeSpan.FromSeconds(1), LoginThrottle.AddressWindow));
        Assert.Null(await a.AttemptFromAsync("198.51.100.1", default)); // another address is not affected
        clock.Now += LoginThrottle.AddressWindow;
        Assert.Null(await b.AttemptFromAsync("192.0.2.7", default)); // a new window starts at 1
        Assert.Equal(1, await a.PruneAsync(clock.Now, default)); // 198.51.100.1's ran out; 192.0.2.7's is new
    }

    [Fact]
    public async Task Rollouts_AnExecutionIsClaimedOnce_StateChangesOnlyFromTheStatesGiven_ConflictsRefused()
    {
        var a = new MsdFleet.Coordinator.Rollouts.RolloutStore((await StartReplicaAsync()).Db, TimeProvider.System);
        var b = new MsdFleet.Coordinator.Rollouts.RolloutStore((await StartReplicaAsync()).Db, TimeProvider.System);
        var spec = new MsdFleet.Coordinator.Rollouts.RolloutSpec { Image = "x.iso", Digest = "sha256:" + new string('1', 64), Mode = "cdrom", Deadline = DateTimeOffset.UtcNow.AddHours(1) };
        Assert.Empty(await a.CreateAsync("r1", "first", spec, "running", "ada", [("ag-1", 0), ("ag-2", 1)], default));
        // The same drive of ag-2 in another active rollout: refused, nothing written.
        Assert.Equal(["ag-2"], await b.CreateAsync("r2", "second", spec, "running", "ada", [("ag-2", 0), ("ag-3", 0)], default));
        Assert.Null(await a.GetAsync("r2", default));
        Assert.Empty(await b.CreateAsync("r3", "other drive", spec with { Drive = 1 }, "running", "ada", [("ag-2", 0)], default));

        // Eight claims of one execution from two replicas at once: exactly one wins.
        var claims = await Task.WhenAll(Enumerable.Range(0, 8).Select(i => (i % 2 == 0 ? a : b).TransitionAsync("r1", "ag-1", "queued", "starting", default)));
        Assert.Single(claims, c => c);
        Assert.True(await b.TransitionAsync("r1", "ag-1", "starting", "pulling", default, generation: 7, started: true));
        var execution = (await a.ExecutionsAsync("r1", default)).Single(e => e.AgentId == "ag-1");
        Assert.Equal(("pulling", 7L), (execution.State, execution.Generation));
        Assert.NotNull(execution.StartedAtMs);

        Assert.False(await a.SetStateAsync("r1", ["paused"], "running", null, default)); // not paused
        Assert.True(await b.SetStateAsync("r1", ["running", "scheduled"], "paused", null, default));
        Assert.Equal("paused", (await a.GetAsync("r1", default))!.State);
        Assert.True(await a.SetStateAsync("r1", MsdFleet.Coordinator.Rollouts.RolloutStates.Active, "cancelling", "cancelled", default, revert: true));
        Assert.Equal((1L, "cancelled"), ((await b.GetAsync("r1", default))!.Revert, (await b.GetAsync("r1", default))!.Reason));
        Assert.Equal(1, await a.CancelQueuedAsync("r1", default));
        Assert.Equal(["r3", "r1"], (await b.ActiveAsync(default)).Select(r => r.Id).Reverse());
    }

    private sealed class ManualClock(DateTimeOffset now) : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = now;

        public override DateTimeOffset GetUtcNow() => Now;
    }
}

public sealed class SqliteStateContractTests : StateContractTests
{
    protected override Task<StateOptions> NewDatabaseAsync(string folder) =>
        Task.FromResult(new StateOptions { Provider = "sqlite", ConnectionString = $"Data Source={Path.Combine(folder, "state.db")}" });
}

[Collection(PostgresServers.Name)]
public sealed class PostgresStateContractTests(PostgresServer server) : StateContractTests
{
    protected override async Task<StateOptions> NewDatabaseAsync(string folder) =>
        new() { Provider = "postgres", ConnectionString = await server.CreateDatabaseAsync() };

    [Fact]
    public async Task StoreGate_UploadOnOneReplica_HoldsOffGcOnAnother_UntilItEnds()
    {
        var options = Options.Create(await NewDatabaseAsync(""));
        using var uploads = new StoreGate(new StateDatabase(options));
        using var gc = new StoreGate(new StateDatabase(options));

        // Waits are observed in PostgreSQL's lock table (an advisory lock not yet granted), not guessed with sleeps.
        var db = new StateDatabase(options);
        async Task WaitingAsync(int count, string what)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (await db.ReadAsync(c => c.ExecuteScalarAsync<long>("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"), default) < count)
                Assert.True(DateTime.UtcNow < deadline, $"never saw {what} waiting for the lock");
        }
        var upload = await uploads.EnterSharedAsync(default);
        var collect = gc.EnterExclusiveAsync(default);
        await WaitingAsync(1, "GC");
        Assert.False(collect.IsCompleted, "GC entered while another replica's upload was running");
        // A second upload elsewhere queues behind the waiting GC (writer-preferring), not beside the first.
        var late = uploads.EnterSharedAsync(default);
        await WaitingAsync(2, "the late upload");
        await upload.DisposeAsync();
        await using (await collect.WaitAsync(TimeSpan.FromSeconds(10)))
        {
            await WaitingAsync(1, "the late upload (behind GC)");
            Assert.False(late.IsCompleted, "an upload entered while GC ran");
        }
        await (await late.WaitAsync(TimeSpan.FromSeconds(10))).DisposeAsync();
    }
}
