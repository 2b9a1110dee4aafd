using System.Security.Claims;
using Microsoft.AspNetCore.Authentication;
using MsdFleet.Coordinator.Auth;
using MsdFleet.Coordinator.Storage;

namespace MsdFleet.Coordinator.Tests.Auth;

/// <summary>Expired sessions and enrollment tokens are removed from the store; live ones stay and still work.</summary>
public sealed class HousekeepingTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "msdfleet-auth-" + Guid.NewGuid().ToString("N"));
    private readonly FileSystemObjectStore _store;

    public HousekeepingTests() => _store = new FileSystemObjectStore(_root);

    public void Dispose()
    {
        _store.Dispose();
        Directory.Delete(_root, true);
    }

    [Fact]
    public async Task Prune_RemovesOnlyExpiredSessionsAndEnrollments()
    {
        var now = DateTimeOffset.UtcNow;
        var sessions = new SessionTicketStore(_store);
        AuthenticationTicket Ticket(DateTimeOffset expires) => new(new ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.Name, "ada")], "Cookies")),
            new AuthenticationProperties { ExpiresUtc = expires }, "Cookies");
        var live = await sessions.StoreAsync(Ticket(now.AddHours(1)));
        var dead = await sessions.StoreAsync(Ticket(now.AddHours(-1)));
        Assert.Equal(1, await sessions.PruneAsync(now, default));
        Assert.NotNull(await sessions.RetrieveAsync(live));
        Assert.Null(await sessions.RetrieveAsync(dead));

        var clock = new ManualClock(now);
        using var enrollments = new EnrollmentStore(_store, clock);
        var (shortToken, _) = await enrollments.CreateAsync("short", TimeSpan.FromHours(1), "admin", default);
        var (longToken, _) = await enrollments.CreateAsync("long", TimeSpan.FromHours(48), "admin", default);
        clock.Now = now.AddHours(2);
        Assert.Equal(1, await enrollments.PruneAsync(clock.Now, default));
        Assert.Null(await enrollments.FindAsync(shortToken, default));
        Assert.Equal("long", (await enrollments.FindAsync(longToken, default))!.AgentId);
    }

    private sealed class ManualClock(DateTimeOffset now) : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = now;

        public override DateTimeOffset GetUtcNow() => Now;
    }
}
