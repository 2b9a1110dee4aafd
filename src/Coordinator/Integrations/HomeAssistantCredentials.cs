using System.Text.Json;
using Dapper;
using MsdFleet.Coordinator.Auth;
using MsdFleet.Coordinator.State;
using MsdFleet.Coordinator.Web;

namespace MsdFleet.Coordinator.Integrations;

/// <summary>
/// The MQTT login Home Assistant uses on the embedded broker (and in the generated Mosquitto files):
/// user <c>$homeassistant</c>, a random secret stored only as hashes. That user may read discovery and
/// MsdFleet's Home Assistant state topics and publish only commands and Home Assistant's own status.
/// Kept in the state database (<c>integration_credentials</c>), read at each use: a rotation on one
/// replica holds on all of them.
/// </summary>
public sealed class HomeAssistantCredentials(StateDatabase db, TimeProvider time)
{
    public const string Name = "homeassistant";
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public async Task<string> RotateAsync(CancellationToken ct)
    {
        var secret = SecretHash.NewSecret("msdh_");
        var record = new Record(SecretHash.HashHex(secret), MosquittoPasswordHash.Create(secret), time.GetUtcNow());
        await db.WriteAsync((c, t) => UpsertAsync(c, t, JsonSerializer.Serialize(record, Json), overwrite: true, ct), ct);
        return secret;
    }

    internal static Task<int> UpsertAsync(System.Data.Common.DbConnection c, System.Data.Common.DbTransaction t, string json, bool overwrite, CancellationToken ct) =>
        c.ExecuteAsync(new CommandDefinition(
            "INSERT INTO integration_credentials (name, record) VALUES (@name, @json) ON CONFLICT (name) " + (overwrite ? "DO UPDATE SET record = excluded.record" : "DO NOTHING"),
            new { name = Name, json }, t, cancellationToken: ct));

    public async Task<bool> VerifyAsync(string secret, CancellationToken ct) =>
        await GetAsync(ct) is { } record && SecretHash.Matches(secret, record.SecretSha256);

    public async Task<string?> MosquittoHashAsync(CancellationToken ct) => (await GetAsync(ct))?.MosquittoHash;

    private async Task<Record?> GetAsync(CancellationToken ct)
    {
        var json = await db.ReadAsync(c => c.QuerySingleOrDefaultAsync<string>(new CommandDefinition(
            "SELECT record FROM integration_credentials WHERE name = @name", new { name = Name }, cancellationToken: ct)), ct);
        return json is null ? null : JsonSerializer.Deserialize<Record>(json, Json);
    }

    private sealed record Record(string SecretSha256, string MosquittoHash, DateTimeOffset CreatedAt);

    public static WebApplication MapHomeAssistantApi(WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        app.MapPost("/api/v1/integrations/home-assistant/credentials", async (HomeAssistantCredentials credentials, AuditLog audit,
            System.Security.Claims.ClaimsPrincipal user, Microsoft.Extensions.Options.IOptions<HomeAssistantOptions> options,
            CancellationToken ct) =>
        {
            if (!options.Value.Enabled)
                throw new ApiException(StatusCodes.Status409Conflict, "home-assistant-disabled", "Home Assistant discovery is off (HomeAssistant:Enabled).");
            var secret = await credentials.RotateAsync(ct);
            await audit.RecordAsync(user, "integration.home-assistant", HomeAssistantOptions.MqttUser, "credentials created or rotated", ct);
            return Results.Ok(new { username = HomeAssistantOptions.MqttUser, password = secret, discoveryPrefix = options.Value.DiscoveryPrefix, commands = options.Value.Commands });
        }).RequireAuthorization(Policies.Admin);
        return app;
    }
}
