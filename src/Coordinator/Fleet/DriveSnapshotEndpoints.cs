using System.Security.Claims;
using MsdFleet.Coordinator.Auth;
using MsdFleet.Coordinator.Catalog;
using MsdFleet.Coordinator.Messaging;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Fleet;

/// <summary>
/// <c>POST /api/v1/agents/{id}/drives/{n}/snapshot {name}</c>: save what the server wrote to a writable
/// drive as a new catalog image. The request travels in the signed desired state (once per id); the agent
/// detaches the drive gently (refusing while the server holds it), cuts its working copy with the same
/// chunker, pushes only the chunks the catalog lacks and commits under the name — reporting progress and
/// the outcome per drive, which <c>GET …/snapshot</c> shows. Everything that can be checked here is checked
/// before anything is asked of the agent, with a ProblemDetails answer.
/// </summary>
public static class DriveSnapshotEndpoints
{
    public static RouteGroupBuilder MapDriveSnapshots(this RouteGroupBuilder agents)
    {
        ArgumentNullException.ThrowIfNull(agents);
        agents.MapPost("/{agentId}/drives/{index:int}/snapshot", RequestAsync).RequireAuthorization(Policies.Operate);
        agents.MapGet("/{agentId}/drives/{index:int}/snapshot", GetAsync).RequireAuthorization(Policies.Read);
        return agents;
    }

    private static async Task<IResult> RequestAsync(string agentId, int index, SnapshotBody? body, ImageCatalog catalog, DesiredStateStore desired,
        FleetRegistry registry, AgentCredentialStore credentials, IDesiredStatePublisher mqtt, AuditLog audit, ClaimsPrincipal user, CancellationToken ct)
    {
        Validate(agentId, index);
        if (body?.Name is null)
            throw ApiException.BadRequest("invalid-body", "Send a JSON body {\"name\": \"…\"}: the catalog name to save the drive as.");
        if (!NameRules.TryValidateImageName(body.Name, out var nameError))
            throw ApiException.BadRequest("invalid-image-name", nameError);
        if (await credentials.FindAsync(agentId, ct) is null)
            throw ApiException.NotFound("agent-not-found", $"No agent '{agentId}' is registered.");

        var id = Guid.NewGuid().ToString("N");
        // Checked and written in one transaction holding the agent's row lock, so a concurrent change of the drive cannot slip between.
        var state = await desired.ChangeAsync(agentId, async change =>
        {
            var drive = change.Current?.Drives.FirstOrDefault(d => d.Index == index);
            if (drive?.ImageDigest is null)
                throw ApiException.Conflict("no-working-copy", $"Drive {index} of '{agentId}' has no image, so it has no writes to save.");
            if (drive.Mode != DriveMode.Flash || drive.ReadOnly)
                throw ApiException.Conflict("drive-read-only", $"Drive {index} of '{agentId}' is read-only: only a writable flash drive has writes to save.");
            var reported = registry.Get(agentId)?.Report?.Drives.FirstOrDefault(d => d.Index == index);
            if (reported?.WorkingCopy is null)
                throw ApiException.Conflict("no-working-copy", $"'{agentId}' reports no working copy for drive {index}: it was never attached writable (or the agent has not reported yet).");
            if (reported.Snapshot is { State: SnapshotState.Running })
                throw ApiException.Conflict("snapshot-running", $"Drive {index} of '{agentId}' is being saved as '{reported.Snapshot.ImageName}' right now.");
            if (await catalog.GetForShareAsync(change.Connection, change.Transaction, body.Name, ct) is not null)
                throw ImageCatalog.ImageExists(body.Name);
            return DesiredStateStore.WithDrive(change.Current, drive with { Snapshot = new SnapshotRequest { Id = id, Name = body.Name }, DiscardWrites = false });
        }, ct);
        await mqtt.PublishDesiredAsync(agentId, ct);
        await audit.RecordAsync(user, "drive.snapshot", $"{agentId}/{index}", $"save as {body.Name} (request {id}, generation {state.Generation})", ct);
        return Results.Accepted($"/api/v1/agents/{agentId}/drives/{index}/snapshot",
            new SnapshotAccepted(id, body.Name, agentId, index, state.Generation));
    }

    private static IResult GetAsync(string agentId, int index, DesiredStateStore desired, FleetRegistry registry)
    {
        Validate(agentId, index);
        var requested = desired.Get(agentId)?.Drives.FirstOrDefault(d => d.Index == index)?.Snapshot;
        var reported = registry.Get(agentId)?.Report?.Drives.FirstOrDefault(d => d.Index == index)?.Snapshot;
        if (requested is null && reported is null)
            throw ApiException.NotFound("snapshot-not-found", $"No snapshot of drive {index} of '{agentId}' was asked for.");
        return Results.Ok(new SnapshotStatus(requested?.Id, requested?.Name, reported is null ? null : SnapshotView.From(reported)));
    }

    private static void Validate(string agentId, int index)
    {
        if (!NameRules.TryValidateAgentId(agentId, out var error))
            throw ApiException.BadRequest("invalid-agent-id", error);
        if (index is < 0 or >= DriveLimits.MaxDrives)
            throw ApiException.BadRequest("invalid-drive", $"Drive index {index} is outside 0..{DriveLimits.MaxDrives - 1}.");
    }
}

public sealed record SnapshotBody(string? Name);

public sealed record SnapshotAccepted(string SnapshotId, string Name, string AgentId, int Drive, long Generation);

/// <summary>The request the desired state carries, and what the agent reports of the drive's latest snapshot.</summary>
public sealed record SnapshotStatus(string? RequestedId, string? RequestedName, SnapshotView? Reported);

public sealed record SnapshotView(string Id, string State, long BytesDone, long BytesTotal, long BytesSent, string? Image, string? Digest, string? Error)
{
    public static SnapshotView From(SnapshotReport r)
    {
        ArgumentNullException.ThrowIfNull(r);
        return new(r.Id, r.State.ToString().ToLowerInvariant(), r.BytesDone, r.BytesTotal, r.BytesSent, r.ImageName, r.ImageDigest, r.Error);
    }
}
