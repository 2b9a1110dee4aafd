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

    public async Task<ApiTokenRecord?> FindAsync(string token, CancellationToken cancellationToken)
    {
        var hash = SecretHash.HashHex(token);
        if (_cache.TryGetValue(hash, out var cached))
            return cached;
        var bytes = await store.GetBytesAsync(ObjectKeys.Token(hash), 64 * 1024, cancellationToken);
        if (bytes is null)
            return null;
        var record = JsonSerializer.Deserialize<ApiTokenRecord>(bytes, Json)!;
        _cache[hash] = record;
        return record;
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

public sealed record ApiTokenRecord(string Name, string Role, DateTimeOffset CreatedAt);
