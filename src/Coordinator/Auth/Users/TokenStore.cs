using System.Text.Json;
using Dapper;
using MsdFleet.Coordinator.State;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// API tokens, stored only as hashes (<c>api_tokens</c>, keyed by the token's SHA-256), so a token is found
/// with one indexed lookup and the database never holds anything that could be replayed. Nothing is cached:
/// every request asks the database, so a revocation on any replica holds on every replica at once.
/// </summary>
public sealed class TokenStore(StateDatabase db, TimeProvider time)
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    /// <summary>The token's record, or null when it is unknown, revoked or expired.</summary>
    public async Task<ApiTokenRecord?> FindAsync(string token, CancellationToken cancellationToken)
    {
        var hash = SecretHash.HashHex(token);
        var json = await db.ReadAsync(c => c.QuerySingleOrDefaultAsync<string>(new CommandDefinition(
            "SELECT record FROM api_tokens WHERE hash = @hash", new { hash }, cancellationToken: cancellationToken)), cancellationToken);
        if (json is null)
            return null;
        var record = JsonSerializer.Deserialize<ApiTokenRecord>(json, Json)!;
        return record.ExpiresAt is { } expires && expires <= time.GetUtcNow() ? null : record;
    }

    public async Task<IReadOnlyList<ApiTokenRecord>> ListAsync(CancellationToken cancellationToken)
    {
        var rows = await db.ReadAsync(c => c.QueryAsync<string>(new CommandDefinition(
            "SELECT record FROM api_tokens ORDER BY created_at_ms, id", cancellationToken: cancellationToken)), cancellationToken);
        return rows.Select(r => JsonSerializer.Deserialize<ApiTokenRecord>(r, Json)!).ToList();
    }

    /// <summary>Revokes by id (the first 16 hex digits of the token's hash); false when unknown.</summary>
    public async Task<bool> RevokeAsync(string id, CancellationToken cancellationToken) =>
        id.Length == 16 && await db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition(
            "DELETE FROM api_tokens WHERE id = @id", new { id }, t, cancellationToken: cancellationToken)), cancellationToken) > 0;

    /// <summary>Revokes every personal token of a user (when the user is deleted or changed).</summary>
    public Task RevokeOwnedByAsync(string owner, CancellationToken cancellationToken) =>
        db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition(
            "DELETE FROM api_tokens WHERE owner = @owner", new { owner }, t, cancellationToken: cancellationToken)), cancellationToken);

    public async Task<bool> AnyAsync(CancellationToken cancellationToken) =>
        await db.ReadAsync(c => c.ExecuteScalarAsync<long>(new CommandDefinition("SELECT COUNT(*) FROM api_tokens", cancellationToken: cancellationToken)), cancellationToken) > 0;

    public Task AddAsync(string token, ApiTokenRecord record, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(record);
        var hash = SecretHash.HashHex(token);
        return db.WriteAsync((c, t) => InsertAsync(c, t, hash, record, cancellationToken), cancellationToken);
    }

    /// <summary>Inserts a token row (also used by the import of an earlier version's store); false when the hash is already there.</summary>
    internal static async Task<bool> InsertAsync(System.Data.Common.DbConnection c, System.Data.Common.DbTransaction t, string hash, ApiTokenRecord record, CancellationToken cancellationToken)
    {
        record = record with { Id = hash[..16] };
        return await c.ExecuteAsync(new CommandDefinition(
            "INSERT INTO api_tokens (hash, id, owner, record, created_at_ms) VALUES (@hash, @id, @owner, @json, @at) ON CONFLICT (hash) DO NOTHING",
            new { hash, id = record.Id, owner = record.Owner, json = JsonSerializer.Serialize(record, Json), at = record.CreatedAt.ToUnixTimeMilliseconds() },
            t, cancellationToken: cancellationToken)) > 0;
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
