using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Identity;
using MsdFleet.Coordinator.Storage;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// People who log in with a password (the web UI, <c>msdctl login</c>). Passwords are kept only as
/// ASP.NET Core Identity's PBKDF2 hashes (HMAC-SHA512, 100,000 iterations, 128-bit salt) under
/// <c>auth/users/&lt;name&gt;</c>. A security stamp changes with the password or role, which ends
/// every browser session of that user at its next request.
/// </summary>
public sealed partial class UserStore(IObjectStore store, TimeProvider time)
{
    private const string Prefix = "auth/users/";
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly PasswordHasher<UserRecord> _hasher = new();
    private readonly ConcurrentDictionary<string, UserRecord> _cache = new(StringComparer.Ordinal);
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
        if (_cache.TryGetValue(name, out var cached))
            return cached;
        var bytes = await store.GetBytesAsync(Prefix + name, 64 * 1024, cancellationToken);
        if (bytes is null)
            return null;
        var record = JsonSerializer.Deserialize<UserRecord>(bytes, Json)!;
        _cache[name] = record;
        return record;
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

    public async Task<UserRecord> CreateAsync(string name, string password, string role, CancellationToken cancellationToken)
    {
        var record = new UserRecord(name, role, string.Empty, time.GetUtcNow(), NewStamp());
        return await SaveAsync(record with { PasswordHash = _hasher.HashPassword(record, password) }, cancellationToken);
    }

    public async Task<UserRecord> UpdateAsync(UserRecord record, string? password, string? role, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(record);
        var updated = record with { Role = role ?? record.Role, SecurityStamp = NewStamp() };
        if (password is not null)
            updated = updated with { PasswordHash = _hasher.HashPassword(updated, password) };
        return await SaveAsync(updated, cancellationToken);
    }

    public async Task<bool> DeleteAsync(string name, CancellationToken cancellationToken)
    {
        if (await FindAsync(name, cancellationToken) is null)
            return false;
        _cache.TryRemove(name, out _);
        await store.DeleteAsync(Prefix + name, cancellationToken);
        await store.FlushAsync(cancellationToken);
        return true;
    }

    public async Task<IReadOnlyList<UserRecord>> ListAsync(CancellationToken cancellationToken)
    {
        var users = new List<UserRecord>();
        await foreach (var key in store.ListAsync(Prefix, cancellationToken))
        {
            if (await FindAsync(key[Prefix.Length..], cancellationToken) is { } user)
                users.Add(user);
        }
        return users.OrderBy(u => u.Name, StringComparer.Ordinal).ToList();
    }

    public async Task<bool> AnyAsync(CancellationToken cancellationToken)
    {
        await foreach (var _ in store.ListAsync(Prefix, cancellationToken))
            return true;
        return false;
    }

    private async Task<UserRecord> SaveAsync(UserRecord record, CancellationToken cancellationToken)
    {
        await store.PutAsync(Prefix + record.Name, JsonSerializer.SerializeToUtf8Bytes(record, Json), cancellationToken);
        await store.FlushAsync(cancellationToken);
        _cache[record.Name] = record;
        return record;
    }

    private static string NewStamp() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
}

public sealed record UserRecord(string Name, string Role, string PasswordHash, DateTimeOffset CreatedAt, string SecurityStamp);
