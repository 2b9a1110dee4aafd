using System.Text.Json;
using MsdFleet.Coordinator.Auth;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;

namespace MsdFleet.Coordinator.Integrations;

/// <summary>
/// The MQTT login Home Assistant uses on the embedded broker (and in the generated Mosquitto files):
/// user <c>$homeassistant</c>, a random secret stored only as hashes. That user may read discovery and
/// MsdFleet's Home Assistant state topics and publish only commands and Home Assistant's own status.
/// </summary>
public sealed class HomeAssistantCredentials(IObjectStore store, TimeProvider time)
{
    private const string Key = "auth/integrations/homeassistant";
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private Record? _cached;

    public async Task<string> RotateAsync(CancellationToken ct)
    {
        var secret = SecretHash.NewSecret("msdh_");
        var record = new Record(SecretHash.HashHex(secret), MosquittoPasswordHash.Create(secret), time.GetUtcNow());
        await store.PutAsync(Key, JsonSerializer.SerializeToUtf8Bytes(record, Json), ct);
        await store.FlushAsync(ct);
        _cached = record;
        return secret;
    }

    public async Task<bool> VerifyAsync(string secret, CancellationToken ct) =>
        await GetAsync(ct) is { } record && SecretHash.Matches(secret, record.SecretSha256);

    public async Task<string?> MosquittoHashAsync(CancellationToken ct) => (await GetAsync(ct))?.MosquittoHash;

    private async Task<Record?> GetAsync(CancellationToken ct)
    {
        if (_cached is not null)
            return _cached;
        var bytes = await store.GetBytesAsync(Key, 64 * 1024, ct);
        return _cached = bytes is null ? null : JsonSerializer.Deserialize<Record>(bytes, Json);
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
