using MsdFleet.Coordinator.Auth;
using MsdFleet.Coordinator.Catalog;
using MsdFleet.Coordinator.Messaging;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Fleet;

/// <summary><c>/api/v1/agents</c>: the fleet view, per-drive desired state, and agent credentials.</summary>
public static class FleetEndpoints
{
    public static WebApplication MapFleetApi(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var agents = app.MapGroup("/api/v1/agents");
        agents.MapGet("/", ListAsync).RequireAuthorization(Policies.Read);
        agents.MapGet("/{agentId}", GetAsync).RequireAuthorization(Policies.Read);
        agents.MapPut("/{agentId}/drives/{index:int}", SetDriveAsync).RequireAuthorization(Policies.Operate);
        agents.MapPut("/{agentId}/bandwidth", SetBandwidthAsync).RequireAuthorization(Policies.Operate);
        agents.MapDriveSnapshots();
        agents.MapPost("/{agentId}/credentials", CreateCredentialsAsync).RequireAuthorization(Policies.Admin);
        agents.MapPost("/{agentId}/disable", (string agentId, AgentCredentialStore credentials, AuditLog audit, System.Security.Claims.ClaimsPrincipal user,
            IAgentSessions sessions, CancellationToken ct) => SetDisabledAsync(agentId, true, credentials, audit, user, sessions, ct)).RequireAuthorization(Policies.Admin);
        agents.MapPost("/{agentId}/enable", (string agentId, AgentCredentialStore credentials, AuditLog audit, System.Security.Claims.ClaimsPrincipal user,
            IAgentSessions sessions, CancellationToken ct) => SetDisabledAsync(agentId, false, credentials, audit, user, sessions, ct)).RequireAuthorization(Policies.Admin);
        // The public key agents pin to verify desired state; readable by agents and people.
        app.MapGet("/api/v1/signing-key", async (SigningKeyStore keys, CancellationToken ct) =>
        {
            var key = await keys.GetAsync(ct);
            return Results.Ok(new { keyId = Protocol.Signing.DesiredStateSigning.KeyId(key), algorithm = "ECDSA-P256-SHA256", publicKey = Convert.ToBase64String(key.ExportSubjectPublicKeyInfo()) });
        }).RequireAuthorization(Policies.ImageData);
        return app;
    }

    private static async Task<IResult> ListAsync(FleetRegistry registry, DesiredStateStore desired, AgentCredentialStore credentials, CancellationToken ct)
    {
        var ids = (await credentials.ListAgentIdsAsync(ct)).Concat(registry.All.Select(a => a.AgentId)).Distinct().Order(StringComparer.Ordinal);
        return Results.Ok(ids.Select(id => View(id, registry, desired)).ToList());
    }

    private static async Task<IResult> GetAsync(string agentId, FleetRegistry registry, DesiredStateStore desired, AgentCredentialStore credentials, CancellationToken ct)
    {
        ValidAgentId(agentId);
        if (registry.Get(agentId) is null && await credentials.FindAsync(agentId, ct) is null)
            throw UnknownAgent(agentId);
        return Results.Ok(View(agentId, registry, desired));
    }

    private static async Task<IResult> SetDriveAsync(string agentId, int index, DriveRequest? request, DriveAssignment assignment,
        System.Security.Claims.ClaimsPrincipal user, CancellationToken ct) =>
        Results.Ok(DesiredView.From(await assignment.AssignAsync(agentId, index, request, user, ct)));

    private static async Task<IResult> SetBandwidthAsync(string agentId, BandwidthRequest? request, DriveAssignment assignment,
        System.Security.Claims.ClaimsPrincipal user, CancellationToken ct)
    {
        if (request is null)
            throw ApiException.BadRequest("invalid-bandwidth", "Send {\"maxBytesPerSecond\": N} with N >= 0 (0 = unlimited), or null to use the agent's own setting.");
        return Results.Ok(DesiredView.From(await assignment.SetBandwidthAsync(agentId, request.MaxBytesPerSecond, user, ct)));
    }

    private static async Task<IResult> SetDisabledAsync(string agentId, bool disabled, AgentCredentialStore credentials, AuditLog audit,
        System.Security.Claims.ClaimsPrincipal user, IAgentSessions sessions, CancellationToken ct)
    {
        ValidAgentId(agentId);
        if (!await credentials.SetDisabledAsync(agentId, disabled, ct))
            throw UnknownAgent(agentId);
        if (disabled)
            await sessions.EndAsync(agentId);
        await audit.RecordAsync(user, disabled ? "agent.disable" : "agent.enable", agentId, null, ct);
        return Results.Ok(new { agentId, disabled });
    }

    private static async Task<IResult> CreateCredentialsAsync(string agentId, AgentCredentialStore credentials, AuditLog audit,
        System.Security.Claims.ClaimsPrincipal user, IAgentSessions sessions, CancellationToken ct)
    {
        ValidAgentId(agentId);
        var secret = await credentials.CreateOrRotateAsync(agentId, ct);
        await sessions.EndAsync(agentId); // a rotated secret ends the old session at once
        await audit.RecordAsync(user, "agent.credentials", agentId, "created or rotated", ct);
        return Results.Ok(new { agentId, secret });
    }

    internal static AgentView View(string agentId, FleetRegistry registry, DesiredStateStore desired)
    {
        var observed = registry.Get(agentId);
        var state = desired.Get(agentId);
        var report = observed?.Report;
        return new AgentView(
            agentId,
            observed?.Online ?? false,
            observed?.StatusAt,
            observed?.ReportAt,
            report?.AgentVersion,
            report?.Labels,
            report?.Drives.Select(DriveView.From).ToList(),
            report?.Cache.Select(c => new CachedImageView(c.ImageDigest, c.Size)).ToList(),
            report?.Transfers.Select(t => new TransferView(t.ImageDigest, t.BytesDone, t.BytesTotal, t.State.ToString().ToLowerInvariant(), t.Error)).ToList(),
            report?.FreeBytes,
            report?.TotalBytes,
            report?.AppliedGeneration,
            report?.LastError,
            state is null ? null : DesiredView.From(state));
    }

    internal static string? ModeName(DriveMode mode) => mode switch
    {
        DriveMode.Cdrom => "cdrom",
        DriveMode.Flash => "flash",
        _ => null,
    };

    private static void ValidAgentId(string agentId)
    {
        if (!NameRules.TryValidateAgentId(agentId, out var error))
            throw ApiException.BadRequest("invalid-agent-id", error);
    }

    internal static ApiException UnknownAgent(string agentId) =>
        ApiException.NotFound("agent-not-found", $"No agent '{agentId}' is registered; create its credentials first.");
}

public sealed record BandwidthRequest(long? MaxBytesPerSecond);

public sealed record DriveRequest(string? Image, string? Mode, bool? ReadOnly, bool? Connected, bool? DiscardWrites = null);

public sealed record AgentView(
    string Id, bool Online, DateTimeOffset? StatusAt, DateTimeOffset? ReportedAt, string? Version,
    IReadOnlyDictionary<string, string>? Labels, IReadOnlyList<DriveView>? Drives, IReadOnlyList<CachedImageView>? Cache,
    IReadOnlyList<TransferView>? Transfers, long? FreeBytes, long? TotalBytes, long? AppliedGeneration, string? LastError,
    DesiredView? Desired);

public sealed record DriveView(int Index, string? Image, string? Mode, bool ReadOnly, bool Connected, string? HostState, string? Error,
    string? Function, int Lun, bool CdromCapable, bool WritableCapable, WorkingCopyView? WorkingCopy, HostReadView? HostRead, SnapshotView? Snapshot)
{
    public static DriveView From(DriveReport d)
    {
        ArgumentNullException.ThrowIfNull(d);
        return new(d.Index, d.ImageDigest, FleetEndpoints.ModeName(d.Mode), d.ReadOnly, d.Connected, d.HostState, d.Error,
            d.Function, d.Lun, d.CdromCapable, d.WritableCapable,
            d.WorkingCopy is { } w ? new WorkingCopyView(w.BaseDigest, w.Size, w.UnsavedWrites, w.Attached) : null,
            d.HostRead is { } r ? new HostReadView(r.BytesRead, r.LastReadUnixMs > 0 ? DateTimeOffset.FromUnixTimeMilliseconds(r.LastReadUnixMs) : null, r.BytesWritten, r.BytesEstimated) : null,
            d.Snapshot is { } s ? SnapshotView.From(s) : null);
    }
}

/// <summary>A writable drive's own copy: the image it was made from, and whether the server wrote to it since.</summary>
public sealed record WorkingCopyView(string BaseDigest, long Size, bool UnsavedWrites, bool Attached);

/// <summary>What the host read from (and wrote to) a drive since it was attached, as far as the agent's kernel shows it.</summary>
public sealed record HostReadView(long? BytesRead, DateTimeOffset? LastReadAt, long? BytesWritten, bool BytesEstimated);

public sealed record CachedImageView(string Digest, long Size);

public sealed record TransferView(string Digest, long BytesDone, long BytesTotal, string State, string? Error);

public sealed record DesiredView(long Generation, IReadOnlyList<DesiredDriveView> Drives, long? MaxBytesPerSecond)
{
    public static DesiredView From(DesiredState state) =>
        new(state.Generation, state.Drives.Select(d => new DesiredDriveView(d.Index, d.ImageName, d.ImageDigest, FleetEndpoints.ModeName(d.Mode), d.ReadOnly, d.Connected)).ToList(),
            state.MaxBytesPerSecond);
}

public sealed record DesiredDriveView(int Index, string? Image, string? Digest, string? Mode, bool ReadOnly, bool Connected);
