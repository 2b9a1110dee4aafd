using System.Security.Cryptography;
using Dapper;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.Cookies;
using MsdFleet.Coordinator.State;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// Server-side browser sessions: the cookie carries only a random session key, the ticket lives in the
/// <c>sessions</c> table under the key's SHA-256 (a copy of the table names no usable key). Logging out
/// deletes it, so a copied cookie is worthless afterwards — on every replica at once, since tickets are
/// not cached; a restart or another replica still knows the session.
/// </summary>
public sealed class SessionTicketStore(StateDatabase db) : ITicketStore
{
    public async Task<string> StoreAsync(AuthenticationTicket ticket)
    {
        var key = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
        await RenewAsync(key, ticket);
        return key;
    }

    public async Task RenewAsync(string key, AuthenticationTicket ticket)
    {
        ArgumentNullException.ThrowIfNull(ticket);
        if (!IsKey(key))
            return;
        await db.WriteAsync((c, t) => c.ExecuteAsync(
            "INSERT INTO sessions (key_hash, ticket, expires_at_ms) VALUES (@hash, @bytes, @expires) " +
            "ON CONFLICT (key_hash) DO UPDATE SET ticket = excluded.ticket, expires_at_ms = excluded.expires_at_ms",
            new { hash = SecretHash.HashHex(key), bytes = TicketSerializer.Default.Serialize(ticket), expires = ticket.Properties.ExpiresUtc?.ToUnixTimeMilliseconds() }, t),
            CancellationToken.None);
    }

    public async Task<AuthenticationTicket?> RetrieveAsync(string key)
    {
        if (!IsKey(key))
            return null;
        var bytes = await db.ReadAsync(c => c.QuerySingleOrDefaultAsync<byte[]>(
            "SELECT ticket FROM sessions WHERE key_hash = @hash", new { hash = SecretHash.HashHex(key) }), CancellationToken.None);
        return bytes is null ? null : TicketSerializer.Default.Deserialize(bytes);
    }

    public async Task RemoveAsync(string key)
    {
        if (!IsKey(key))
            return;
        await db.WriteAsync((c, t) => c.ExecuteAsync("DELETE FROM sessions WHERE key_hash = @hash", new { hash = SecretHash.HashHex(key) }, t), CancellationToken.None);
    }

    /// <summary>Deletes sessions that expired before <paramref name="now"/> (or never said when they expire); returns how many.</summary>
    public Task<int> PruneAsync(DateTimeOffset now, CancellationToken cancellationToken) =>
        db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition(
            "DELETE FROM sessions WHERE expires_at_ms IS NULL OR expires_at_ms <= @now", new { now = now.ToUnixTimeMilliseconds() }, t, cancellationToken: cancellationToken)),
            cancellationToken);

    private static bool IsKey(string key) => key is { Length: 64 } && key.All(char.IsAsciiHexDigitLower);
}
