using System.Collections.Concurrent;
using System.Text.Json;
using MsdFleet.Coordinator.Storage;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// Each agent's own secret, used for HTTP (Basic) and for the embedded broker (MQTT user/password).
/// Only the hash is stored; the secret is shown once when created or rotated.
/// </summary>
public sealed class AgentCredentialStore(IObjectStore store, TimeProvider time)
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly ConcurrentDictionary<string, AgentCredentialRecord> _cache = new(StringComparer.Ordinal);

    public async Task<string> CreateOrRotateAsync(string agentId, CancellationToken cancellationToken)
    {
        var secret = SecretHash.NewSecret("msda_");
        var record = new AgentCredentialRecord(agentId, SecretHash.HashHex(secret), time.GetUtcNow())
        {
            MosquittoHash = MosquittoPasswordHash.Create(secret),
        };
        await store.PutAsync(ObjectKeys.AgentCredentials(agentId), JsonSerializer.SerializeToUtf8Bytes(record, Json), cancellationToken);
        await store.FlushAsync(cancellationToken);
        _cache[agentId] = record;
        return secret;
    }

    public async Task<AgentCredentialRecord?> FindAsync(string agentId, CancellationToken cancellationToken)
    {
        if (_cache.TryGetValue(agentId, out var cached))
            return cached;
        var bytes = await store.GetBytesAsync(ObjectKeys.AgentCredentials(agentId), 64 * 1024, cancellationToken);
        if (bytes is null)
            return null;
        var record = JsonSerializer.Deserialize<AgentCredentialRecord>(bytes, Json)!;
        _cache[agentId] = record;
        return record;
    }

    public async Task<bool> VerifyAsync(string agentId, string secret, CancellationToken cancellationToken)
    {
        var record = await FindAsync(agentId, cancellationToken);
        return record is not null && !record.Disabled && SecretHash.Matches(secret, record.SecretSha256);
    }

    /// <summary>Disables or re-enables an agent's credentials; false when the agent is unknown.</summary>
    public async Task<bool> SetDisabledAsync(string agentId, bool disabled, CancellationToken cancellationToken)
    {
        var record = await FindAsync(agentId, cancellationToken);
        if (record is null)
            return false;
        var updated = record with { Disabled = disabled };
        await store.PutAsync(ObjectKeys.AgentCredentials(agentId), JsonSerializer.SerializeToUtf8Bytes(updated, Json), cancellationToken);
        await store.FlushAsync(cancellationToken);
        _cache[agentId] = updated;
        return true;
    }

    public async Task<IReadOnlyList<string>> ListAgentIdsAsync(CancellationToken cancellationToken)
    {
        var ids = new List<string>();
        await foreach (var key in store.ListAsync(ObjectKeys.AgentCredentialsPrefix, cancellationToken))
            ids.Add(key[ObjectKeys.AgentCredentialsPrefix.Length..]);
        return ids;
    }
}

public sealed record AgentCredentialRecord(string AgentId, string SecretSha256, DateTimeOffset CreatedAt)
{
    /// <summary>The same secret in Mosquitto's password-file format, for an external broker (see MosquittoConfigEndpoints).</summary>
    public string? MosquittoHash { get; init; }

    /// <summary>A disabled agent can neither log in to the broker nor call the API.</summary>
    public bool Disabled { get; init; }
}
