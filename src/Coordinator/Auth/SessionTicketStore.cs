using System.Collections.Concurrent;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.Cookies;
using MsdFleet.Coordinator.Storage;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// Server-side browser sessions: the cookie carries only a random session key, the ticket lives under
/// <c>auth/sessions/</c> in the object store. Logging out deletes it, so a copied cookie is worthless
/// afterwards; a restart or another replica still knows the session.
/// </summary>
public sealed class SessionTicketStore(IObjectStore store) : ITicketStore
{
    private const string Prefix = "auth/sessions/";
    private readonly ConcurrentDictionary<string, AuthenticationTicket> _cache = new(StringComparer.Ordinal);

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
        await store.PutAsync(Prefix + key, TicketSerializer.Default.Serialize(ticket), CancellationToken.None);
        await store.FlushAsync(CancellationToken.None);
        _cache[key] = ticket;
    }

    public async Task<AuthenticationTicket?> RetrieveAsync(string key)
    {
        if (!IsKey(key))
            return null;
        if (_cache.TryGetValue(key, out var cached))
            return cached;
        var bytes = await store.GetBytesAsync(Prefix + key, 256 * 1024, CancellationToken.None);
        if (bytes is null)
            return null;
        var ticket = TicketSerializer.Default.Deserialize(bytes);
        if (ticket is not null)
            _cache[key] = ticket;
        return ticket;
    }

    public async Task RemoveAsync(string key)
    {
        if (!IsKey(key))
            return;
        _cache.TryRemove(key, out _);
        await store.DeleteAsync(Prefix + key, CancellationToken.None);
        await store.FlushAsync(CancellationToken.None);
    }

    /// <summary>Deletes stored tickets that expired before <paramref name="now"/>; returns how many.</summary>
    public async Task<int> PruneAsync(DateTimeOffset now, CancellationToken cancellationToken)
    {
        var removed = 0;
        var keys = new List<string>();
        await foreach (var key in store.ListAsync(Prefix, cancellationToken))
            keys.Add(key);
        foreach (var key in keys)
        {
            var bytes = await store.GetBytesAsync(key, 256 * 1024, cancellationToken);
            var ticket = bytes is null ? null : TicketSerializer.Default.Deserialize(bytes);
            if (ticket?.Properties.ExpiresUtc is { } expires && expires > now)
                continue;
            _cache.TryRemove(key[Prefix.Length..], out _);
            await store.DeleteAsync(key, cancellationToken);
            removed++;
        }
        if (removed > 0)
            await store.FlushAsync(cancellationToken);
        return removed;
    }

    private static bool IsKey(string key) => key is { Length: 64 } && key.All(char.IsAsciiHexDigitLower);
}
