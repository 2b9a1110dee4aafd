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
        if (request is null || (request.AgentId is null) == (request.MaxDevices is null))
            throw ApiException.BadRequest("invalid-enrollment", "Send {\"agentId\": \"…\"} for one device, or {\"maxDevices\": N, \"agentIdPattern\": \"rack*\", \"labels\": {…}} for a fleet token — not both.");
        if (request.ExpiresInHours is < 1 or > 720)
            throw ApiException.BadRequest("invalid-expiry", "expiresInHours must be between 1 and 720.");
        if (!Labels.TryValidate(request.Labels, out var labelError))
            throw ApiException.BadRequest("invalid-labels", labelError);
        var lifetime = TimeSpan.FromHours(request.ExpiresInHours ?? 24);
        var url = PublicUrl(auth.Value, context);
        string Command(string token, string? id) => $"msdfleet-agent enroll --coordinator {url} --token {token}" + (id is null ? "" : $" --id {id}")
            + (tls.CaSha256 is { } fp ? $" --ca-sha256 {fp}" : string.Empty);

        if (request.MaxDevices is { } max)
        {
            if (max is < 1 or > MaxFleetDevices)
                throw ApiException.BadRequest("invalid-max-devices", $"maxDevices must be between 1 and {MaxFleetDevices}.");
            var pattern = request.AgentIdPattern ?? "*";
            if (pattern.Length is 0 or > NameRules.MaxAgentIdLength || pattern.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '*' or '?')))
                throw ApiException.BadRequest("invalid-agent-id-pattern",
                    $"agentIdPattern must be 1-{NameRules.MaxAgentIdLength} characters of agent ids (letters, digits, '-', '_', '.') with '*' (any run) and '?' (one character).");
            var (fleetToken, fleet) = await store.CreateFleetAsync(max, pattern, request.Labels ?? new Dictionary<string, string>(), lifetime, user.Identity?.Name ?? "unknown", ct);
            await audit.RecordAsync(user, "enrollment.create", $"fleet:{fleet.Id}",
                $"up to {max} devices matching {pattern}{LabelText(fleet.Labels)} until {fleet.ExpiresAt:O}", ct);
            return Results.Created($"/api/v1/enrollments/{fleet.Id}", new
            {
                fleet.Id, fleet.MaxDevices, fleet.AgentIdPattern, fleet.Labels, fleet.ExpiresAt, token = fleetToken, caSha256 = tls.CaSha256, coordinatorUrl = url,
                command = Command(fleetToken, "$(hostname)"),
            });
        }

        if (!NameRules.TryValidateAgentId(request.AgentId, out var error))
            throw ApiException.BadRequest("invalid-agent-id", error ?? "Invalid agent id.");
        var existing = await credentials.FindAsync(request.AgentId, ct);
        if (existing is not null && !(request.Replace ?? false))
            throw ApiException.Conflict("agent-exists", $"Agent '{request.AgentId}' already has credentials; send \"replace\": true to re-enroll it (its current secret stops working when the new device enrolls).");
        var (token, record) = await store.CreateAsync(request.AgentId, lifetime, user.Identity?.Name ?? "unknown", ct);
        await audit.RecordAsync(user, "enrollment.create", request.AgentId, $"id {record.Id} until {record.ExpiresAt:O}", ct);
        return Results.Created($"/api/v1/enrollments/{record.Id}",
            new { record.Id, record.AgentId, record.ExpiresAt, token, caSha256 = tls.CaSha256, coordinatorUrl = url, command = Command(token, null) });
    }

    private static readonly System.Text.Json.JsonSerializerOptions BodyJson = new(System.Text.Json.JsonSerializerDefaults.Web);

    /// <summary>The most devices one fleet token may enroll.</summary>
    public const int MaxFleetDevices = 10_000;

    private static string LabelText(IReadOnlyDictionary<string, string>? labels) =>
        labels is { Count: > 0 } ? ", labels " + string.Join(",", labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}={l.Value}")) : "";

    private static async Task<IResult> EnrollAsync(ClaimsPrincipal user, HttpContext context, EnrollmentStore store, AgentCredentialStore credentials,
        Fleet.AgentLabelStore labels, State.StateDatabase db, SigningKeyStore signing, TlsCertificates tls, IOptions<AuthOptions> auth, IOptions<MqttOptions> mqtt,
        TopicNames topics, AuditLog audit, IAgentSessions sessions, CancellationToken ct)
    {
        var header = context.Request.Headers.Authorization.ToString();
        var token = header[(header.IndexOf(' ', StringComparison.Ordinal) + 1)..].Trim();
        var body = await ReadBodyAsync(context, ct);
        var found = await store.FindAsync(token, ct)
            ?? throw new ApiException(StatusCodes.Status401Unauthorized, "enrollment-used", "This enrollment token was used, revoked or has expired.");
        string agentId, secret, detail;
        if (found.IsFleet)
        {
            agentId = body?.AgentId ?? body?.HostName?.ToLowerInvariant()
                ?? throw ApiException.BadRequest("agent-id-required", "This token enrolls many devices: send {\"agentId\": \"…\"} (msdfleet-agent enroll --id ID; the host name by default).");
            if (!NameRules.TryValidateAgentId(agentId, out var error))
                throw ApiException.BadRequest("invalid-agent-id", error);
            if (!found.Allows(agentId))
                throw new ApiException(StatusCodes.Status403Forbidden, "agent-id-not-allowed", $"This token enrolls agent ids matching '{found.AgentIdPattern}'; '{agentId}' does not.");
            // One transaction: the device slot and the new credentials commit together, or neither does (an id
            // that is taken gives the slot back). A fleet token never replaces an agent that exists.
            secret = await db.WriteAsync(async (c, t) =>
            {
                if (!await store.ClaimDeviceAsync(c, t, token, ct))
                    throw new ApiException(StatusCodes.Status401Unauthorized, "enrollment-used",
                        $"This token has enrolled all {found.MaxDevices} of its devices, or was revoked or has expired.");
                return await credentials.TryCreateAsync(c, t, agentId, ct)
                    ?? throw ApiException.Conflict("agent-exists",
                        $"Agent '{agentId}' is already enrolled, and a fleet token never replaces an agent. Choose another id (--id), or re-enroll it with a one-device token ({{\"agentId\": \"{agentId}\", \"replace\": true}}).");
            }, ct);
            if (found.Labels is { Count: > 0 } given)
                await labels.SetAsync(agentId, given, ct);
            detail = $"fleet enrollment {found.Id}{LabelText(found.Labels)}";
        }
        else
        {
            agentId = found.AgentId!;
            if (body?.AgentId is { } asked && asked != agentId)
                throw ApiException.BadRequest("agent-id-mismatch", $"This token enrolls '{agentId}', not '{asked}'.");
            // Consumed before anything is handed out: a token works once, even when two devices race.
            var record = await store.ConsumeAsync(token, ct)
                ?? throw new ApiException(StatusCodes.Status401Unauthorized, "enrollment-used", "This enrollment token was used, revoked or has expired.");
            secret = await credentials.CreateOrRotateAsync(agentId, ct);
            await sessions.EndAsync(agentId); // a re-enrolled device replaces the old one at once
            detail = $"enrollment {record.Id}";
        }
        var key = await signing.GetAsync(ct);
        await audit.RecordAsync(user, "agent.enroll", agentId, $"{detail} from {context.Connection.RemoteIpAddress}", ct);
        return Results.Ok(new EnrollmentAnswer(
            agentId,
            secret,
            PublicUrl(auth.Value, context).ToString(),
            BrokerUrl(mqtt.Value, tls, context),
            topics.Prefix,
            Convert.ToBase64String(key.ExportSubjectPublicKeyInfo()),
            DesiredStateSigning.KeyId(key),
            tls.CaPem));
    }

    /// <summary>The device's optional body (older agents send none): which id it wants, and its host name.</summary>
    private static async Task<EnrollBody?> ReadBodyAsync(HttpContext context, CancellationToken ct)
    {
        if (context.Request.ContentLength is null or 0 && context.Request.Headers.TransferEncoding.Count == 0)
            return null;
        if (context.Request.ContentLength > 4096)
            throw ApiException.BadRequest("invalid-body", "The enrollment body is at most 4 KiB: {\"agentId\": \"…\", \"hostName\": \"…\"}.");
        try
        {
            return await System.Text.Json.JsonSerializer.DeserializeAsync<EnrollBody>(context.Request.Body, BodyJson, ct);
        }
        catch (System.Text.Json.JsonException ex)
        {
            throw ApiException.BadRequest("invalid-body", $"The enrollment body is not JSON {{\"agentId\", \"hostName\"}}: {ex.Message}");
        }
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

/// <param name="AgentId">One device: the agent id it enrolls.</param>
/// <param name="MaxDevices">A fleet token: how many devices it may enroll, each choosing its own id.</param>
/// <param name="AgentIdPattern">A fleet token: the ids devices may choose (<c>*</c>, <c>?</c>); any valid id by default.</param>
/// <param name="Labels">Central labels every device it enrolls gets.</param>
public sealed record EnrollmentRequest(string? AgentId, int? ExpiresInHours, bool? Replace, int? MaxDevices = null, string? AgentIdPattern = null,
    Dictionary<string, string>? Labels = null);

public sealed record EnrollBody(string? AgentId, string? HostName);
