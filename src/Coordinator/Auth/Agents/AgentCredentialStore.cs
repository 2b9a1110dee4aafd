using System.Data.Common;
using System.Text.Json;
using Dapper;
using MsdFleet.Coordinator.State;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// Each agent's own secret, used for HTTP (Basic) and for the embedded broker (MQTT user/password), in
/// <c>agent_credentials</c>. Only the hash is stored; the secret is shown once when created or rotated.
/// Not cached: a rotation or a disable on any replica holds on every replica from the next request.
/// </summary>
public sealed class AgentCredentialStore(StateDatabase db, TimeProvider time)
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public async Task<string> CreateOrRotateAsync(string agentId, CancellationToken cancellationToken)
    {
        var secret = SecretHash.NewSecret("msda_");
        var record = new AgentCredentialRecord(agentId, SecretHash.HashHex(secret), time.GetUtcNow())
        {
            MosquittoHash = MosquittoPasswordHash.Create(secret),
        };
        await db.WriteAsync((c, t) => UpsertAsync(c, t, record, cancellationToken), cancellationToken);
        return secret;
    }

    /// <summary>
    /// New credentials for an agent id no one has yet, inside the caller's transaction; null when the id is taken
    /// (one INSERT … ON CONFLICT DO NOTHING, so two devices claiming one id on any replicas never both get it).
    /// </summary>
    public async Task<string?> TryCreateAsync(DbConnection c, DbTransaction t, string agentId, CancellationToken cancellationToken)
    {
        var secret = SecretHash.NewSecret("msda_");
        var record = new AgentCredentialRecord(agentId, SecretHash.HashHex(secret), time.GetUtcNow())
        {
            MosquittoHash = MosquittoPasswordHash.Create(secret),
        };
        return await UpsertAsync(c, t, record, cancellationToken, overwrite: false) == 1 ? secret : null;
    }

    public async Task<AgentCredentialRecord?> FindAsync(string agentId, CancellationToken cancellationToken)
    {
        var json = await db.ReadAsync(c => c.QuerySingleOrDefaultAsync<string>(new CommandDefinition(
            "SELECT record FROM agent_credentials WHERE agent_id = @agentId", new { agentId }, cancellationToken: cancellationToken)), cancellationToken);
        return json is null ? null : JsonSerializer.Deserialize<AgentCredentialRecord>(json, Json);
    }

    public async Task<bool> VerifyAsync(string agentId, string secret, CancellationToken cancellationToken)
    {
        var record = await FindAsync(agentId, cancellationToken);
        return record is not null && !record.Disabled && SecretHash.Matches(secret, record.SecretSha256);
    }

    /// <summary>Disables or re-enables an agent's credentials; false when the agent is unknown. The row is locked while it changes.</summary>
    public Task<bool> SetDisabledAsync(string agentId, bool disabled, CancellationToken cancellationToken) =>
        db.WriteAsync(async (c, t) =>
        {
            var json = await c.QuerySingleOrDefaultAsync<string>(new CommandDefinition(
                $"SELECT record FROM agent_credentials WHERE agent_id = @agentId{db.ForUpdate}", new { agentId }, t, cancellationToken: cancellationToken));
            if (json is null)
                return false;
            await UpsertAsync(c, t, JsonSerializer.Deserialize<AgentCredentialRecord>(json, Json)! with { Disabled = disabled }, cancellationToken);
            return true;
        }, cancellationToken);

    public Task<IReadOnlyList<string>> ListAgentIdsAsync(CancellationToken cancellationToken) =>
        db.ReadAsync<IReadOnlyList<string>>(async c => (await c.QueryAsync<string>(new CommandDefinition(
            "SELECT agent_id FROM agent_credentials ORDER BY agent_id", cancellationToken: cancellationToken))).ToList(), cancellationToken);

    internal static Task<int> UpsertAsync(DbConnection c, DbTransaction t, AgentCredentialRecord record, CancellationToken cancellationToken, bool overwrite = true) =>
        c.ExecuteAsync(new CommandDefinition(
            "INSERT INTO agent_credentials (agent_id, record) VALUES (@agentId, @json) ON CONFLICT (agent_id) " +
            (overwrite ? "DO UPDATE SET record = excluded.record" : "DO NOTHING"),
            new { agentId = record.AgentId, json = JsonSerializer.Serialize(record, Json) }, t, cancellationToken: cancellationToken));
}

public sealed record AgentCredentialRecord(string AgentId, string SecretSha256, DateTimeOffset CreatedAt)
{
    /// <summary>The same secret in Mosquitto's password-file format, for an external broker (see MosquittoConfigEndpoints).</summary>
    public string? MosquittoHash { get; init; }

    /// <summary>A disabled agent can neither log in to the broker nor call the API.</summary>
    public bool Disabled { get; init; }
}
