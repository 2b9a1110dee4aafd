using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Identity;
using Dapper;
using MsdFleet.Coordinator.State;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// People who log in with a password (the web UI, <c>msdctl login</c>). Passwords are kept only as
/// ASP.NET Core Identity's PBKDF2 hashes (HMAC-SHA512, 100,000 iterations, 128-bit salt) in the
/// <c>users</c> table. A security stamp changes with the password or role, which ends every browser
/// session of that user at its next request — on every replica, since nothing here is cached.
/// </summary>
public sealed partial class UserStore(StateDatabase db, TimeProvider time)
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly PasswordHasher<UserRecord> _hasher = new();
    // Verifying against this keeps unknown-user answers as slow as wrong-password ones.
    private readonly Lazy<string> _decoyHash = new(() => new PasswordHasher<UserRecord>().HashPassword(null!, Convert.ToHexString(RandomNumberGenerator.GetBytes(16))));

    public const int MinPasswordLength = 12;

    [GeneratedRegex("^[a-z0-9][a-z0-9._-]{0,63}$")]
    private static partial Regex NamePattern();

    public static string? ValidateName(string? name) =>
        name is not null && NamePattern().IsMatch(name) ? null : "A user name is 1-64 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit.";

    public static string? ValidatePassword(string? name, string? password) => password switch
    {
        null or { Length: < MinPasswordLength } => $"A password needs at least {MinPasswordLength} characters.",
        { Length: > 1024 } => "A password may have at most 1024 characters.",
        _ when string.Equals(password, name, StringComparison.OrdinalIgnoreCase) => "The password must not be the user name.",
        _ => null,
    };

    public async Task<UserRecord?> FindAsync(string name, CancellationToken cancellationToken)
    {
        if (ValidateName(name) is not null)
            return null;
        var json = await db.ReadAsync(c => c.QuerySingleOrDefaultAsync<string>(new CommandDefinition(
            "SELECT record FROM users WHERE name = @name", new { name }, cancellationToken: cancellationToken)), cancellationToken);
        return json is null ? null : JsonSerializer.Deserialize<UserRecord>(json, Json);
    }

    /// <summary>The user if the password is right; null otherwise (unknown users cost the same time).</summary>
    public async Task<UserRecord?> VerifyAsync(string name, string password, CancellationToken cancellationToken)
    {
        var record = await FindAsync(name, cancellationToken);
        if (record is null)
        {
            _hasher.VerifyHashedPassword(null!, _decoyHash.Value, password);
            return null;
        }
        var result = _hasher.VerifyHashedPassword(record, record.PasswordHash, password);
        if (result == PasswordVerificationResult.Failed)
            return null;
        if (result == PasswordVerificationResult.SuccessRehashNeeded)
            record = await SaveAsync(record with { PasswordHash = _hasher.HashPassword(record, password) }, cancellationToken);
        return record;
    }

    /// <summary>Creates a user; null when the name is taken (also by a concurrent create on another replica).</summary>
    public async Task<UserRecord?> CreateAsync(string name, string password, string role, CancellationToken cancellationToken)
    {
        var record = new UserRecord(name, role, string.Empty, time.GetUtcNow(), NewStamp());
        record = record with { PasswordHash = _hasher.HashPassword(record, password) };
        var created = await db.WriteAsync((c, t) => UpsertAsync(c, t, record, cancellationToken, overwrite: false), cancellationToken);
        return created > 0 ? record : null;
    }

    public async Task<UserRecord> UpdateAsync(UserRecord record, string? password, string? role, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(record);
        var updated = record with { Role = role ?? record.Role, SecurityStamp = NewStamp() };
        if (password is not null)
            updated = updated with { PasswordHash = _hasher.HashPassword(updated, password) };
        return await SaveAsync(updated, cancellationToken);
    }

    public async Task<bool> DeleteAsync(string name, CancellationToken cancellationToken) =>
        await db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition(
            "DELETE FROM users WHERE name = @name", new { name }, t, cancellationToken: cancellationToken)), cancellationToken) > 0;

    public async Task<IReadOnlyList<UserRecord>> ListAsync(CancellationToken cancellationToken)
    {
        var rows = await db.ReadAsync(c => c.QueryAsync<string>(new CommandDefinition("SELECT record FROM users", cancellationToken: cancellationToken)), cancellationToken);
        return rows.Select(r => JsonSerializer.Deserialize<UserRecord>(r, Json)!).OrderBy(u => u.Name, StringComparer.Ordinal).ToList();
    }

    public async Task<bool> AnyAsync(CancellationToken cancellationToken) =>
        await db.ReadAsync(c => c.ExecuteScalarAsync<long>(new CommandDefinition("SELECT COUNT(*) FROM users", cancellationToken: cancellationToken)), cancellationToken) > 0;

    private async Task<UserRecord> SaveAsync(UserRecord record, CancellationToken cancellationToken)
    {
        await db.WriteAsync((c, t) => UpsertAsync(c, t, record, cancellationToken), cancellationToken);
        return record;
    }

    internal static Task<int> UpsertAsync(System.Data.Common.DbConnection c, System.Data.Common.DbTransaction t, UserRecord record, CancellationToken cancellationToken, bool overwrite = true) =>
        c.ExecuteAsync(new CommandDefinition(
            "INSERT INTO users (name, record) VALUES (@name, @json) ON CONFLICT (name) " + (overwrite ? "DO UPDATE SET record = excluded.record" : "DO NOTHING"),
            new { name = record.Name, json = JsonSerializer.Serialize(record, Json) }, t, cancellationToken: cancellationToken));

    private static string NewStamp() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
}

public sealed record UserRecord(string Name, string Role, string PasswordHash, DateTimeOffset CreatedAt, string SecurityStamp);
