using System.Security.Claims;
using Microsoft.Extensions.Options;
using MsdFleet.Coordinator.Messaging;
using MsdFleet.Coordinator.Security;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Naming;
using MsdFleet.Protocol.Signing;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// Enrollment: an admin creates a one-time token for an agent id (<c>POST /api/v1/enrollments</c>); the
/// device runs <c>msdfleet-agent enroll --coordinator URL --token T</c>, which exchanges it
/// (<c>POST /api/v1/enroll</c>) for the agent's own secret, the broker address, the topic prefix, the
/// desired-state signing key to pin and the CA to trust. The CA itself is public
/// (<c>GET /api/v1/tls/ca</c>), fetched by the agent and checked against the fingerprint the admin gave it.
/// </summary>
public static class EnrollmentEndpoints
{
    public static WebApplication MapEnrollmentApi(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var enrollments = app.MapGroup("/api/v1/enrollments").RequireAuthorization(Policies.Admin);
        enrollments.MapGet("/", async (EnrollmentStore store, CancellationToken ct) => Results.Ok(await store.ListAsync(ct)));
        enrollments.MapPost("/", CreateAsync);
        enrollments.MapDelete("/{id}", async (string id, EnrollmentStore store, AuditLog audit, ClaimsPrincipal user, CancellationToken ct) =>
        {
            if (!await store.RevokeAsync(id, ct))
                throw ApiException.NotFound("enrollment-not-found", $"No pending enrollment with id '{id}'.");
            await audit.RecordAsync(user, "enrollment.revoke", id, null, ct);
            return Results.NoContent();
        });
        app.MapPost("/api/v1/enroll", EnrollAsync).RequireAuthorization(Policies.Enroll);
        app.MapGet("/api/v1/tls/ca", (TlsCertificates tls) => tls.CaPem is null
            ? throw ApiException.NotFound("no-private-ca", "This Coordinator's certificate is publicly trusted (or TLS is off); there is no CA to hand out.")
            : Results.Text(tls.CaPem, "application/x-pem-file")).AllowAnonymous();
        return app;
    }

    private static async Task<IResult> CreateAsync(EnrollmentRequest? request, EnrollmentStore store, AgentCredentialStore credentials, TlsCertificates tls,
        IOptions<AuthOptions> auth, AuditLog audit, ClaimsPrincipal user, HttpContext context, CancellationToken ct)
    {
        if (request?.AgentId is null)
            throw ApiException.BadRequest("invalid-agent-id", "Send {\"agentId\": \"…\"}.");
        if (!NameRules.TryValidateAgentId(request.AgentId, out var error))
            throw ApiException.BadRequest("invalid-agent-id", error ?? "Invalid agent id.");
        if (request.ExpiresInHours is < 1 or > 720)
            throw ApiException.BadRequest("invalid-expiry", "expiresInHours must be between 1 and 720.");
        var existing = await credentials.FindAsync(request.AgentId, ct);
        if (existing is not null && !(request.Replace ?? false))
            throw ApiException.Conflict("agent-exists", $"Agent '{request.AgentId}' already has credentials; send \"replace\": true to re-enroll it (its current secret stops working when the new device enrolls).");
        var (token, record) = await store.CreateAsync(request.AgentId, TimeSpan.FromHours(request.ExpiresInHours ?? 24), user.Identity?.Name ?? "unknown", ct);
        await audit.RecordAsync(user, "enrollment.create", request.AgentId, $"id {record.Id} until {record.ExpiresAt:O}", ct);
        var url = PublicUrl(auth.Value, context);
        var command = $"msdfleet-agent enroll --coordinator {url} --token {token}" + (tls.CaSha256 is { } fp ? $" --ca-sha256 {fp}" : string.Empty);
        return Results.Created($"/api/v1/enrollments/{record.Id}",
            new { record.Id, record.AgentId, record.ExpiresAt, token, caSha256 = tls.CaSha256, coordinatorUrl = url, command });
    }

    private static async Task<IResult> EnrollAsync(ClaimsPrincipal user, HttpContext context, EnrollmentStore store, AgentCredentialStore credentials,
        SigningKeyStore signing, TlsCertificates tls, IOptions<AuthOptions> auth, IOptions<MqttOptions> mqtt, TopicNames topics, AuditLog audit,
        IAgentSessions sessions, CancellationToken ct)
    {
        var header = context.Request.Headers.Authorization.ToString();
        var token = header[(header.IndexOf(' ', StringComparison.Ordinal) + 1)..].Trim();
        // Consumed before anything is handed out: a token works once, even when two devices race.
        var record = await store.ConsumeAsync(token, ct)
            ?? throw new ApiException(StatusCodes.Status401Unauthorized, "enrollment-used", "This enrollment token was used, revoked or has expired.");
        var secret = await credentials.CreateOrRotateAsync(record.AgentId, ct);
        await sessions.EndAsync(record.AgentId); // a re-enrolled device replaces the old one at once
        var key = await signing.GetAsync(ct);
        await audit.RecordAsync(user, "agent.enroll", record.AgentId,
            $"enrollment {record.Id} from {context.Connection.RemoteIpAddress}", ct);
        return Results.Ok(new EnrollmentAnswer(
            record.AgentId,
            secret,
            PublicUrl(auth.Value, context).ToString(),
            BrokerUrl(mqtt.Value, tls, context),
            topics.Prefix,
            Convert.ToBase64String(key.ExportSubjectPublicKeyInfo()),
            DesiredStateSigning.KeyId(key),
            tls.CaPem));
    }

    private static Uri PublicUrl(AuthOptions auth, HttpContext context) =>
        auth.PublicUrl ?? new Uri($"{context.Request.Scheme}://{context.Request.Host}/");

    private static string BrokerUrl(MqttOptions mqtt, TlsCertificates tls, HttpContext context)
    {
        if (!string.IsNullOrEmpty(mqtt.PublicUrl))
            return mqtt.PublicUrl;
        if (!mqtt.IsEmbedded)
            return mqtt.Broker;
        return $"{(tls.Enabled ? "mqtts" : "mqtt")}://{context.Request.Host.Host}:{mqtt.EmbeddedPort}";
    }
}

public sealed record EnrollmentRequest(string? AgentId, int? ExpiresInHours, bool? Replace);
