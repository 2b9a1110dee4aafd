using System.Collections.Concurrent;
using System.Text.Json;
using MsdFleet.Coordinator.Storage;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// API tokens, stored only as hashes under <c>auth/tokens/&lt;sha256&gt;</c>, so a token is found with
/// one lookup and the store never holds anything that could be replayed.
/// </summary>
public sealed class TokenStore(IObjectStore store)
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly ConcurrentDictionary<string, ApiTokenRecord> _cache = new(StringComparer.Ordinal);

    /// <summary>The token's record, or null when it is unknown, revoked or expired.</summary>
    public async Task<ApiTokenRecord?> FindAsync(string token, CancellationToken cancellationToken)
    {
        var hash = SecretHash.HashHex(token);
        if (!_cache.TryGetValue(hash, out var record))
        {
            var bytes = await store.GetBytesAsync(ObjectKeys.Token(hash), 64 * 1024, cancellationToken);
            if (bytes is null)
                return null;
            record = JsonSerializer.Deserialize<ApiTokenRecord>(bytes, Json)!;
            _cache[hash] = record;
        }
        return record.ExpiresAt is { } expires && expires <= DateTimeOffset.UtcNow ? null : record;
    }

    public async Task<IReadOnlyList<ApiTokenRecord>> ListAsync(CancellationToken cancellationToken)
    {
        var records = new List<ApiTokenRecord>();
        await foreach (var key in store.ListAsync(ObjectKeys.TokensPrefix, cancellationToken))
        {
            if (await store.GetBytesAsync(key, 64 * 1024, cancellationToken) is { } bytes)
                records.Add(JsonSerializer.Deserialize<ApiTokenRecord>(bytes, Json)!);
        }
        return records.OrderBy(r => r.CreatedAt).ToList();
    }

    /// <summary>Revokes by id (the first 16 hex digits of the token's hash); false when unknown.</summary>
    public async Task<bool> RevokeAsync(string id, CancellationToken cancellationToken)
    {
        await foreach (var key in store.ListAsync(ObjectKeys.TokensPrefix, cancellationToken))
        {
            var hash = key[ObjectKeys.TokensPrefix.Length..];
            if (!hash.StartsWith(id, StringComparison.Ordinal) || id.Length != 16)
                continue;
            _cache.TryRemove(hash, out _);
            await store.DeleteAsync(key, cancellationToken);
            await store.FlushAsync(cancellationToken);
            return true;
        }
        return false;
    }

    /// <summary>Revokes every personal token of a user (when the user is deleted or changed), in one pass over the tokens.</summary>
    public async Task RevokeOwnedByAsync(string owner, CancellationToken cancellationToken)
    {
        var owned = new List<string>();
        await foreach (var key in store.ListAsync(ObjectKeys.TokensPrefix, cancellationToken))
        {
            if (await store.GetBytesAsync(key, 64 * 1024, cancellationToken) is { } bytes
                && JsonSerializer.Deserialize<ApiTokenRecord>(bytes, Json)!.Owner == owner)
                owned.Add(key);
        }
        foreach (var key in owned)
        {
            _cache.TryRemove(key[ObjectKeys.TokensPrefix.Length..], out _);
            await store.DeleteAsync(key, cancellationToken);
        }
        if (owned.Count > 0)
            await store.FlushAsync(cancellationToken);
    }

    public async Task<bool> AnyAsync(CancellationToken cancellationToken)
    {
        await foreach (var _ in store.ListAsync(ObjectKeys.TokensPrefix, cancellationToken))
            return true;
        return false;
    }

    public async Task AddAsync(string token, ApiTokenRecord record, CancellationToken cancellationToken)
    {
        await store.PutAsync(ObjectKeys.Token(SecretHash.HashHex(token)), JsonSerializer.SerializeToUtf8Bytes(record, Json), cancellationToken);
        await store.FlushAsync(cancellationToken);
    }
}

public sealed record ApiTokenRecord(string Name, string Role, DateTimeOffset CreatedAt)
{
    /// <summary>First 16 hex digits of the token's SHA-256: names it for listing and revoking, reveals nothing.</summary>
    public string? Id { get; init; }
    public DateTimeOffset? ExpiresAt { get; init; }

    /// <summary>The user a personal token was minted for; revoked with that user.</summary>
    public string? Owner { get; init; }
}
