using System.Security.Claims;
using MsdFleet.Coordinator.Auth;
using MsdFleet.Coordinator.Catalog;
using MsdFleet.Coordinator.Messaging;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Fleet;

/// <summary>
/// The use cases that change what an agent should present: put an image on a drive (or eject it), and cap
/// its download bandwidth. The REST API, Home Assistant's commands and (next) rollouts all come through
/// here, so each gets the same checks, the same transaction, the same publication and the same audit record.
/// <para>
/// Safety: the change runs in <see cref="DesiredStateStore.ChangeAsync"/> — one database transaction holding the
/// agent's desired-state row lock, which also reads the image under a share lock so a concurrent delete cannot
/// remove it before the commit. Publication happens after the commit through <see cref="IDesiredStatePublisher"/>,
/// which publishes the newest stored generation under the same row lock, so two concurrent assignments on any
/// replicas never leave an older generation retained after a newer one.
/// </para>
/// Errors are <see cref="ApiException"/>s with a problem type and a message a person can act on.
/// </summary>
public sealed class DriveAssignment(ImageCatalog catalog, DesiredStateStore desired, FleetRegistry registry, AgentCredentialStore credentials,
    IDesiredStatePublisher publisher, AuditLog audit)
{
    public async Task<DesiredState> AssignAsync(string agentId, int index, DriveRequest? request, ClaimsPrincipal actor, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(actor);
        ValidAgentId(agentId);
        if (request is null)
            throw ApiException.BadRequest("invalid-body", "Send a JSON body {image, mode, readOnly, connected}.");
        if (index is < 0 or >= DriveLimits.MaxDrives)
            throw ApiException.BadRequest("invalid-drive", $"Drive index {index} is outside 0..{DriveLimits.MaxDrives - 1}.");
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
        await RequireAgentAsync(agentId, ct);

        var state = await desired.ChangeAsync(agentId, async change =>
        {
            string? digest = null;
            if (request.Image is not null)
                digest = (await catalog.GetForShareAsync(change.Connection, change.Transaction, request.Image, ct) ?? throw CatalogEndpoints.ImageNotFound(request.Image)).Digest;
            var discardWrites = request.DiscardWrites ?? false;
            if (!discardWrites)
                RefuseLosingWrites(agentId, index, digest, mode, readOnly);
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
            // Audited in the same transaction: an assignment is never without its record, nor a record without it
            // (a rollout's leader stopped between the two would otherwise leave the one without the other).
            var generation = (change.Current?.Generation ?? 0) + 1;
            await audit.RecordAsync(change.Connection, change.Transaction, actor, drive.Connected ? "drive.mount" : "drive.eject", $"{agentId}/{index}",
                drive.ImageDigest is null ? "empty"
                    : $"{drive.ImageName} {drive.ImageDigest} {FleetEndpoints.ModeName(drive.Mode)}{(drive.ReadOnly ? " ro" : " rw")} (generation {generation})", ct);
            return DesiredStateStore.WithDrive(change.Current, drive);
        }, ct);
        await publisher.PublishDesiredAsync(agentId, ct);
        return state;
    }

    /// <summary>
    /// A rollout's batch: the same drive given the same image on many agents, in one transaction and one pipelined
    /// publication (<see cref="DesiredStateStore.ChangeManyAsync"/>, <see cref="IDesiredStatePublisher.PublishDesiredManyAsync"/>),
    /// with every check and audit record of <see cref="AssignAsync"/> per agent. An agent refused (unknown, unsaved writes)
    /// gets its error back; the others are assigned. <paramref name="stage"/>: stage the image instead — pulled into the cache and held there, on no drive, so a later assignment attaches it without moving a byte.
    /// </summary>
    /// <param name="pull">How the image may be pulled (a rollout's download windows and its share of the site's budget); null: at once.</param>
    public async Task<IReadOnlyDictionary<string, (DesiredState? State, ApiException? Error)>> AssignManyAsync(IReadOnlyCollection<string> agentIds, int index,
        DriveRequest request, ClaimsPrincipal actor, CancellationToken ct, PullPolicy? pull = null, bool stage = false)
    {
        ArgumentNullException.ThrowIfNull(agentIds);
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(actor);
        if (request.Image is null || !NameRules.TryValidateImageName(request.Image, out var nameError))
            throw ApiException.BadRequest("invalid-image-name", "A batch assignment needs a valid image name.");
        var mode = stage ? DriveMode.None : request.Mode?.ToLowerInvariant() switch
        {
            "cdrom" => DriveMode.Cdrom,
            "flash" => DriveMode.Flash,
            _ => throw ApiException.BadRequest("invalid-mode", $"Mode '{request.Mode}' is not \"cdrom\" or \"flash\"."),
        };
        var readOnly = request.ReadOnly ?? true;
        var known = (await credentials.ListAgentIdsAsync(ct)).ToHashSet(StringComparer.Ordinal);
        string? digest = null;
        var results = await desired.ChangeManyAsync(agentIds, async change =>
        {
            var agentId = change.AgentId;
            if (!NameRules.TryValidateAgentId(agentId, out var idError))
                throw ApiException.BadRequest("invalid-agent-id", idError);
            if (!known.Contains(agentId))
                throw FleetEndpoints.UnknownAgent(agentId);
            // The image under a share lock, once per transaction: a concurrent delete waits for the commit.
            digest ??= (await catalog.GetForShareAsync(change.Connection, change.Transaction, request.Image, ct) ?? throw CatalogEndpoints.ImageNotFound(request.Image)).Digest;
            var generation = (change.Current?.Generation ?? 0) + 1;
            var content = DesiredStateStore.DesiredContent.Of(change.Current);
            if (stage)
            {
                await audit.RecordAsync(change.Connection, change.Transaction, actor, "image.stage", agentId, $"{request.Image} {digest} (generation {generation})", ct);
                return content with
                {
                    Prefetch = (content.Prefetch ?? []).Where(p => p.ImageDigest != digest)
                        .Append(new PrefetchImage { ImageDigest = digest, ImageName = request.Image, Pull = pull }).ToList(),
                };
            }
            RefuseLosingWrites(agentId, index, digest, mode, readOnly);
            var drive = new DesiredDrive
            {
                Index = index, ImageDigest = digest, ImageName = request.Image, Mode = mode, ReadOnly = readOnly, Connected = request.Connected ?? true, Pull = pull,
            };
            await audit.RecordAsync(change.Connection, change.Transaction, actor, drive.Connected ? "drive.mount" : "drive.eject", $"{agentId}/{index}",
                $"{drive.ImageName} {drive.ImageDigest} {FleetEndpoints.ModeName(drive.Mode)}{(drive.ReadOnly ? " ro" : " rw")} (generation {generation})", ct);
            return DesiredStateStore.WithDrive(change.Current, drive);
        }, ct);
        await publisher.PublishDesiredManyAsync(results.Where(r => r.Value.State is not null).Select(r => r.Key).ToList(), ct);
        return results;
    }

    /// <summary>Stops holding a staged image (by catalog name or digest); the agent may evict it when it needs the room. False when it was not staged.</summary>
    public async Task<bool> UnstageAsync(string agentId, string imageOrDigest, ClaimsPrincipal actor, CancellationToken ct)
    {
        ValidAgentId(agentId);
        await RequireAgentAsync(agentId, ct);
        var found = false;
        await desired.ChangeAsync(agentId, async change =>
        {
            var content = DesiredStateStore.DesiredContent.Of(change.Current);
            var left = (content.Prefetch ?? []).Where(p => p.ImageDigest != imageOrDigest && p.ImageName != imageOrDigest).ToList();
            found = left.Count < (content.Prefetch?.Count ?? 0);
            if (!found)
                throw ApiException.NotFound("not-staged", $"'{imageOrDigest}' is not staged on '{agentId}'.");
            await audit.RecordAsync(change.Connection, change.Transaction, actor, "image.unstage", agentId, imageOrDigest, ct);
            return content with { Prefetch = left };
        }, ct);
        await publisher.PublishDesiredAsync(agentId, ct);
        return found;
    }

    /// <param name="bytesPerSecond">0 = unlimited; null = the agent's own setting.</param>
    public async Task<DesiredState> SetBandwidthAsync(string agentId, long? bytesPerSecond, ClaimsPrincipal actor, CancellationToken ct)
    {
        ValidAgentId(agentId);
        if (bytesPerSecond is < 0)
            throw ApiException.BadRequest("invalid-bandwidth", "Send {\"maxBytesPerSecond\": N} with N >= 0 (0 = unlimited), or null to use the agent's own setting.");
        await RequireAgentAsync(agentId, ct);
        var state = await desired.ChangeAsync(agentId, async change =>
        {
            await audit.RecordAsync(change.Connection, change.Transaction, actor, "agent.bandwidth", agentId,
                bytesPerSecond?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "agent default", ct);
            return DesiredStateStore.DesiredContent.Of(change.Current) with { MaxBytesPerSecond = bytesPerSecond };
        }, ct);
        await publisher.PublishDesiredAsync(agentId, ct);
        return state;
    }

    /// <summary>
    /// A writable drive's working copy holds what the server wrote. Pointing the drive at another image, or
    /// making it read-only, would make the agent drop that copy: refused unless the request says
    /// <c>discardWrites</c>. Ejecting (no image) keeps the copy, so it is always allowed. This check reads the
    /// agent's last report; the agent applies the same rule itself, so a write it has not reported yet is
    /// still never lost (the drive is then reported blocked).
    /// </summary>
    private void RefuseLosingWrites(string agentId, int index, string? digest, DriveMode mode, bool readOnly)
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

    private async Task RequireAgentAsync(string agentId, CancellationToken ct)
    {
        if (await credentials.FindAsync(agentId, ct) is null)
            throw FleetEndpoints.UnknownAgent(agentId);
    }

    private static void ValidAgentId(string agentId)
    {
        if (!NameRules.TryValidateAgentId(agentId, out var error))
            throw ApiException.BadRequest("invalid-agent-id", error);
    }
}
