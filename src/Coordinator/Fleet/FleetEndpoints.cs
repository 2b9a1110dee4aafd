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
            IServiceProvider services, CancellationToken ct) => SetDisabledAsync(agentId, true, credentials, audit, user, services, ct)).RequireAuthorization(Policies.Admin);
        agents.MapPost("/{agentId}/enable", (string agentId, AgentCredentialStore credentials, AuditLog audit, System.Security.Claims.ClaimsPrincipal user,
            IServiceProvider services, CancellationToken ct) => SetDisabledAsync(agentId, false, credentials, audit, user, services, ct)).RequireAuthorization(Policies.Admin);
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

    internal static async Task<IResult> SetDriveAsync(string agentId, int index, DriveRequest? request, ImageCatalog catalog, DesiredStateStore desired,
        FleetRegistry registry, AgentCredentialStore credentials, CoordinatorMqttService mqtt, AuditLog audit, System.Security.Claims.ClaimsPrincipal user, CancellationToken ct)
    {
        ValidAgentId(agentId);
        if (request is null)
            throw ApiException.BadRequest("invalid-body", "Send a JSON body {image, mode, readOnly, connected}.");
        if (index is < 0 or >= DriveLimits.MaxDrives)
            throw ApiException.BadRequest("invalid-drive", $"Drive index {index} is outside 0..{DriveLimits.MaxDrives - 1}.");
        if (await credentials.FindAsync(agentId, ct) is null)
            throw UnknownAgent(agentId);
        var mode = request.Mode?.ToLowerInvariant() switch
        {
            null => request.Image is null ? DriveMode.None : throw ApiException.BadRequest("invalid-mode", "Give mode \"cdrom\" or \"flash\" with an image."),
            "cdrom" => DriveMode.Cdrom,
            "flash" => DriveMode.Flash,
            _ => throw ApiException.BadRequest("invalid-mode", $"Mode '{request.Mode}' is not \"cdrom\" or \"flash\"."),
        };
        var readOnly = request.ReadOnly ?? true;
        if (mode == DriveMode.Cdrom && !readOnly)
            throw ApiException.BadRequest("invalid-mode", "A CD-ROM is always read-only; use mode \"flash\" for a writable drive.");
        if (request.Image is not null && !NameRules.TryValidateImageName(request.Image, out var nameError))
            throw ApiException.BadRequest("invalid-image-name", nameError);

        var state = await desired.ChangeAsync(agentId, async change =>
        {
            // Read under a share lock in the same transaction, so a concurrent DELETE cannot remove the image
            // between lookup and commit (ImageCatalog.DeleteUnusedAsync).
            string? digest = null;
            if (request.Image is not null)
                digest = (await catalog.GetForShareAsync(change.Connection, change.Transaction, request.Image, ct) ?? throw CatalogEndpoints.ImageNotFound(request.Image)).Digest;
            var discardWrites = request.DiscardWrites ?? false;
            if (!discardWrites)
                RefuseLosingWrites(agentId, index, digest, mode, readOnly, registry);
            var drive = new DesiredDrive
            {
                Index = index,
                ImageDigest = digest,
                ImageName = request.Image,
                Mode = mode,
                ReadOnly = readOnly,
                Connected = digest is not null && (request.Connected ?? true),
                DiscardWrites = discardWrites,
            };
            return DesiredStateStore.WithDrive(change.Current, drive);
        }, ct);
        await mqtt.PublishDesiredAsync(agentId, ct);
        var drive = state.Drives.First(d => d.Index == index);
        await audit.RecordAsync(user, drive.Connected ? "drive.mount" : "drive.eject", $"{agentId}/{index}",
            drive.ImageDigest is null ? "empty" : $"{drive.ImageName} {drive.ImageDigest} {ModeName(drive.Mode)}{(drive.ReadOnly ? " ro" : " rw")} (generation {state.Generation})", ct);
        return Results.Ok(DesiredView.From(state));
    }

    /// <summary>
    /// A writable drive's working copy holds what the server wrote. Pointing the drive at another image, or
    /// making it read-only, would make the agent drop that copy: refused unless the request says
    /// <c>discardWrites</c>. Ejecting (no image) keeps the copy, so it is always allowed. This check reads the
    /// agent's last report; the agent applies the same rule itself, so a write it has not reported yet is
    /// still never lost (the drive is then reported blocked).
    /// </summary>
    private static void RefuseLosingWrites(string agentId, int index, string? digest, DriveMode mode, bool readOnly, FleetRegistry registry)
    {
        if (digest is null)
            return;
        var copy = registry.Get(agentId)?.Report?.Drives.FirstOrDefault(d => d.Index == index)?.WorkingCopy;
        if (copy is not { UnsavedWrites: true })
            return;
        var keepsCopy = copy.BaseDigest == digest && mode == DriveMode.Flash && !readOnly;
        if (!keepsCopy)
            throw ApiException.Conflict("unsaved-writes",
                $"Drive {index} of '{agentId}' has unsaved writes on its working copy of {copy.BaseDigest}. Save them first " +
                $"(POST /api/v1/agents/{agentId}/drives/{index}/snapshot), or repeat the request with \"discardWrites\": true to throw them away.");
    }

    private static async Task<IResult> SetBandwidthAsync(string agentId, BandwidthRequest? request, DesiredStateStore desired,
        AgentCredentialStore credentials, CoordinatorMqttService mqtt, AuditLog audit, System.Security.Claims.ClaimsPrincipal user, CancellationToken ct)
    {
        ValidAgentId(agentId);
        if (request is null || request.MaxBytesPerSecond is < 0)
            throw ApiException.BadRequest("invalid-bandwidth", "Send {\"maxBytesPerSecond\": N} with N >= 0 (0 = unlimited), or null to use the agent's own setting.");
        if (await credentials.FindAsync(agentId, ct) is null)
            throw UnknownAgent(agentId);
        var state = await desired.SetBandwidthAsync(agentId, request.MaxBytesPerSecond, ct);
        await mqtt.PublishDesiredAsync(agentId, ct);
        await audit.RecordAsync(user, "agent.bandwidth", agentId, request.MaxBytesPerSecond?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "agent default", ct);
        return Results.Ok(DesiredView.From(state));
    }

    private static async Task<IResult> SetDisabledAsync(string agentId, bool disabled, AgentCredentialStore credentials, AuditLog audit,
        System.Security.Claims.ClaimsPrincipal user, IServiceProvider services, CancellationToken ct)
    {
        ValidAgentId(agentId);
        if (!await credentials.SetDisabledAsync(agentId, disabled, ct))
            throw UnknownAgent(agentId);
        if (disabled && services.GetService<EmbeddedBrokerService>() is { } broker)
            await broker.DisconnectAsync(agentId);
        await audit.RecordAsync(user, disabled ? "agent.disable" : "agent.enable", agentId, null, ct);
        return Results.Ok(new { agentId, disabled });
    }

    private static async Task<IResult> CreateCredentialsAsync(string agentId, AgentCredentialStore credentials, AuditLog audit,
        System.Security.Claims.ClaimsPrincipal user, IServiceProvider services, CancellationToken ct)
    {
        ValidAgentId(agentId);
        var secret = await credentials.CreateOrRotateAsync(agentId, ct);
        if (services.GetService<EmbeddedBrokerService>() is { } broker)
            await broker.DisconnectAsync(agentId); // a rotated secret ends the old session at once
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

    private static ApiException UnknownAgent(string agentId) =>
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
