using System.Data.Common;
using System.Text.Json;
using Dapper;
using MsdFleet.Coordinator.State;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// One-time enrollment tokens (<c>msde_…</c>), stored only as hashes in <c>enrollment_tokens</c>.
/// A token names the agent id it enrolls, expires, and is deleted by the exchange that uses it: one
/// <c>DELETE … RETURNING</c>, so of any number of concurrent redeemers on any replicas exactly one gets it.
/// </summary>
public sealed class EnrollmentStore(StateDatabase db, TimeProvider time)
{
    public const string TokenPrefix = "msde_";
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public async Task<(string Token, EnrollmentRecord Record)> CreateAsync(string agentId, TimeSpan lifetime, string createdBy, CancellationToken cancellationToken)
    {
        var token = SecretHash.NewSecret(TokenPrefix);
        var hash = SecretHash.HashHex(token);
        var now = time.GetUtcNow();
        var record = new EnrollmentRecord(hash[..16], agentId, now, now + lifetime, createdBy);
        await db.WriteAsync((c, t) => InsertAsync(c, t, hash, record, cancellationToken), cancellationToken);
        return (token, record);
    }

    /// <summary>
    /// A fleet token: enrolls up to <paramref name="maxDevices"/> devices, each with its own id matching
    /// <paramref name="pattern"/>, until it expires; each gets <paramref name="labels"/>.
    /// </summary>
    public async Task<(string Token, EnrollmentRecord Record)> CreateFleetAsync(int maxDevices, string pattern, IReadOnlyDictionary<string, string> labels,
        TimeSpan lifetime, string createdBy, CancellationToken cancellationToken)
    {
        var token = SecretHash.NewSecret(TokenPrefix);
        var hash = SecretHash.HashHex(token);
        var now = time.GetUtcNow();
        var record = new EnrollmentRecord(hash[..16], null, now, now + lifetime, createdBy)
        {
            MaxDevices = maxDevices,
            AgentIdPattern = pattern,
            Labels = labels,
        };
        await db.WriteAsync(async (c, t) =>
        {
            await InsertAsync(c, t, hash, record, cancellationToken);
            await c.ExecuteAsync(new CommandDefinition("UPDATE enrollment_tokens SET max_devices = @maxDevices WHERE hash = @hash",
                new { hash, maxDevices = (long)maxDevices }, t, cancellationToken: cancellationToken));
        }, cancellationToken);
        return (token, record);
    }

    /// <summary>
    /// Takes one of a fleet token's devices for <paramref name="agentId"/> inside the caller's transaction: one
    /// UPDATE that counts only while <c>used &lt; max_devices</c> and the token is unexpired, so concurrent
    /// devices on any replicas never exceed it. False when the token is used up, revoked or expired.
    /// </summary>
    public async Task<bool> ClaimDeviceAsync(DbConnection c, DbTransaction t, string token, CancellationToken cancellationToken) =>
        await c.ExecuteAsync(new CommandDefinition(
            "UPDATE enrollment_tokens SET used = used + 1 WHERE hash = @hash AND used < max_devices AND expires_at_ms > @now",
            new { hash = SecretHash.HashHex(token), now = time.GetUtcNow().ToUnixTimeMilliseconds() }, t, cancellationToken: cancellationToken)) == 1;

    /// <summary>The token's record if it is known and unexpired (does not consume it).</summary>
    public async Task<EnrollmentRecord?> FindAsync(string token, CancellationToken cancellationToken)
    {
        var json = await db.ReadAsync(c => c.QuerySingleOrDefaultAsync<string>(new CommandDefinition(
            "SELECT record FROM enrollment_tokens WHERE hash = @hash AND expires_at_ms > @now",
            new { hash = SecretHash.HashHex(token), now = time.GetUtcNow().ToUnixTimeMilliseconds() }, cancellationToken: cancellationToken)), cancellationToken);
        return json is null ? null : JsonSerializer.Deserialize<EnrollmentRecord>(json, Json);
    }

    /// <summary>Deletes the token and returns its record; null if it was already used, revoked or expired.</summary>
    public async Task<EnrollmentRecord?> ConsumeAsync(string token, CancellationToken cancellationToken)
    {
        var json = await db.WriteAsync((c, t) => c.QuerySingleOrDefaultAsync<string>(new CommandDefinition(
            "DELETE FROM enrollment_tokens WHERE hash = @hash AND expires_at_ms > @now RETURNING record",
            new { hash = SecretHash.HashHex(token), now = time.GetUtcNow().ToUnixTimeMilliseconds() }, t, cancellationToken: cancellationToken)), cancellationToken);
        return json is null ? null : JsonSerializer.Deserialize<EnrollmentRecord>(json, Json);
    }

    public async Task<IReadOnlyList<EnrollmentRecord>> ListAsync(CancellationToken cancellationToken)
    {
        var rows = await db.ReadAsync(c => c.QueryAsync<(string Record, long Used)>(new CommandDefinition(
            "SELECT record, used FROM enrollment_tokens ORDER BY created_at_ms, id", cancellationToken: cancellationToken)), cancellationToken);
        return rows.Select(r => JsonSerializer.Deserialize<EnrollmentRecord>(r.Record, Json)! with { Used = r.Used }).ToList();
    }

    public async Task<bool> RevokeAsync(string id, CancellationToken cancellationToken) =>
        id.Length == 16 && await db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition(
            "DELETE FROM enrollment_tokens WHERE id = @id", new { id }, t, cancellationToken: cancellationToken)), cancellationToken) > 0;

    /// <summary>Deletes tokens that expired before <paramref name="now"/>; returns how many.</summary>
    public Task<int> PruneAsync(DateTimeOffset now, CancellationToken cancellationToken) =>
        db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition(
            "DELETE FROM enrollment_tokens WHERE expires_at_ms <= @now", new { now = now.ToUnixTimeMilliseconds() }, t, cancellationToken: cancellationToken)), cancellationToken);

    internal static async Task<bool> InsertAsync(DbConnection c, DbTransaction t, string hash, EnrollmentRecord record, CancellationToken cancellationToken) =>
        await c.ExecuteAsync(new CommandDefinition(
            "INSERT INTO enrollment_tokens (hash, id, record, created_at_ms, expires_at_ms) VALUES (@hash, @id, @json, @created, @expires) ON CONFLICT (hash) DO NOTHING",
            new { hash, id = record.Id, json = JsonSerializer.Serialize(record, Json), created = record.CreatedAt.ToUnixTimeMilliseconds(), expires = record.ExpiresAt.ToUnixTimeMilliseconds() },
            t, cancellationToken: cancellationToken)) > 0;
}

/// <param name="AgentId">The one agent a device token enrolls; null for a fleet token (<see cref="MaxDevices"/>).</param>
public sealed record EnrollmentRecord(string Id, string? AgentId, DateTimeOffset CreatedAt, DateTimeOffset ExpiresAt, string CreatedBy)
{
    /// <summary>Fleet tokens: how many devices it may enroll.</summary>
    public int? MaxDevices { get; init; }

    /// <summary>Fleet tokens: the ids devices may choose (<c>*</c> any run of id characters, <c>?</c> one).</summary>
    public string? AgentIdPattern { get; init; }

    /// <summary>Fleet tokens: central labels every device it enrolls gets.</summary>
    public IReadOnlyDictionary<string, string>? Labels { get; init; }

    /// <summary>How many devices it enrolled (listing only).</summary>
    public long Used { get; init; }

    public bool IsFleet => AgentId is null;

    /// <summary>Does <paramref name="agentId"/> fit the pattern (whole id, case-sensitive)?</summary>
    public bool Allows(string agentId) => AgentIdPattern is null || System.Text.RegularExpressions.Regex.IsMatch(agentId,
        "^" + string.Concat(AgentIdPattern.Select(ch => ch switch { '*' => ".*", '?' => ".", _ => System.Text.RegularExpressions.Regex.Escape(ch.ToString()) })) + "$",
        System.Text.RegularExpressions.RegexOptions.None, TimeSpan.FromSeconds(1));
}
