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
        app.MapGet("/api/v1/fleet/summary", SummaryAsync).RequireAuthorization(Policies.Read);
        agents.MapGet("/{agentId}", GetAsync).RequireAuthorization(Policies.Read);
        agents.MapPut("/{agentId}/drives/{index:int}", SetDriveAsync).RequireAuthorization(Policies.Operate);
        agents.MapPut("/{agentId}/bandwidth", SetBandwidthAsync).RequireAuthorization(Policies.Operate);
        agents.MapPut("/{agentId}/labels", SetLabelsAsync).RequireAuthorization(Policies.Operate);
        agents.MapDelete("/{agentId}/staged/{image}", async (string agentId, string image, DriveAssignment assignment, System.Security.Claims.ClaimsPrincipal user,
            CancellationToken ct) =>
        {
            await assignment.UnstageAsync(agentId, image, user, ct);
            return Results.NoContent();
        }).RequireAuthorization(Policies.Operate);
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

    /// <summary>The most agents one page of <c>GET /api/v1/agents</c> holds.</summary>
    public const int MaxPage = 1000;

    /// <summary>
    /// <c>GET /api/v1/agents?selector=site=ams1,!maintenance&amp;q=r1&amp;state=offline,drifted&amp;limit=100&amp;after=ID</c>:
    /// agents whose labels (reported, overridden by central) match the selector, whose id or labels contain
    /// <c>q</c>, and that are in any of the given states; ordered by id. Without <c>limit</c>, all of them; with
    /// it, one page, and a <c>Link: rel="next"</c> header (<c>after</c> = the last id) while there are more.
    /// </summary>
    private static async Task<IResult> ListAsync(string? selector, string? q, string? state, int? limit, string? after, HttpContext http,
        FleetView fleet, CancellationToken ct)
    {
        if (limit is < 1 or > MaxPage)
            throw ApiException.BadRequest("invalid-limit", $"limit must be between 1 and {MaxPage}.");
        var matching = await FilterAsync(selector, q, state, fleet, ct);
        if (after is not null)
            matching = matching.Where(id => string.CompareOrdinal(id, after) > 0);
        if (limit is not { } pageSize)
            return Results.Ok(matching.Select(fleet.View).ToList());
        var page = matching.Take(pageSize + 1).ToList();
        if (page.Count > pageSize)
        {
            page.RemoveAt(pageSize);
            var query = Microsoft.AspNetCore.WebUtilities.QueryHelpers.AddQueryString("/api/v1/agents", new Dictionary<string, string?>
            {
                ["selector"] = selector, ["q"] = q, ["state"] = state, ["limit"] = pageSize.ToString(System.Globalization.CultureInfo.InvariantCulture), ["after"] = page[^1],
            }.Where(kv => kv.Value is not null));
            http.Response.Headers.Link = $"<{query}>; rel=\"next\"";
        }
        return Results.Ok(page.Select(fleet.View).ToList());
    }

    /// <summary><c>GET /api/v1/fleet/summary?selector=&amp;q=</c>: how many agents are online, offline, drifted, failing, pulling — overall and per site.</summary>
    private static async Task<IResult> SummaryAsync(string? selector, string? q, FleetView fleet, CancellationToken ct) =>
        Results.Ok(fleet.Summarize(await FilterAsync(selector, q, null, fleet, ct)));

    private static async Task<IEnumerable<string>> FilterAsync(string? selector, string? q, string? state, FleetView fleet, CancellationToken ct)
    {
        if (!LabelSelector.TryParse(selector, out var parsed, out var error))
            throw ApiException.BadRequest("invalid-selector", error);
        var states = string.IsNullOrWhiteSpace(state) ? [] : state.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (states.FirstOrDefault(s => !FleetView.States.Contains(s)) is { } unknown)
            throw ApiException.BadRequest("invalid-state", $"Unknown state '{unknown}'; filter on {string.Join(", ", FleetView.States)} (comma-separated: any of them).");
        if (q is { Length: > 256 })
            throw ApiException.BadRequest("invalid-query", "q is at most 256 characters.");
        var ids = await fleet.KnownAgentIdsAsync(ct);
        return ids.Where(id => parsed.Matches(fleet.LabelsOf(id))
            && (string.IsNullOrWhiteSpace(q) || fleet.Contains(id, q.Trim()))
            && (states.Length == 0 || states.Any(s => fleet.Is(id, s))));
    }

    private static async Task<IResult> GetAsync(string agentId, FleetRegistry registry, FleetView fleet, AgentCredentialStore credentials, CancellationToken ct)
    {
        ValidAgentId(agentId);
        if (registry.Get(agentId) is null && await credentials.FindAsync(agentId, ct) is null)
            throw UnknownAgent(agentId);
        return Results.Ok(fleet.View(agentId));
    }

    /// <summary>Replaces the agent's central labels (<c>{"labels": {"site": "ams1", …}}</c>; <c>{}</c> clears them).</summary>
    private static async Task<IResult> SetLabelsAsync(string agentId, LabelsRequest? request, AgentLabelStore labels, FleetView fleet,
        AgentCredentialStore credentials, AuditLog audit, System.Security.Claims.ClaimsPrincipal user, CancellationToken ct)
    {
        ValidAgentId(agentId);
        if (request?.Labels is null)
            throw ApiException.BadRequest("invalid-labels", "Send {\"labels\": {\"key\": \"value\", …}}; {\"labels\": {}} removes the central labels.");
        if (!Labels.TryValidate(request.Labels, out var error))
            throw ApiException.BadRequest("invalid-labels", error);
        if (await credentials.FindAsync(agentId, ct) is null)
            throw UnknownAgent(agentId);
        await labels.SetAsync(agentId, request.Labels, ct);
        await audit.RecordAsync(user, "agent.labels", agentId, request.Labels.Count == 0 ? "cleared"
            : string.Join(",", request.Labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}={l.Value}")), ct);
        return Results.Ok(fleet.View(agentId));
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

public sealed record LabelsRequest(Dictionary<string, string>? Labels);

public sealed record DriveRequest(string? Image, string? Mode, bool? ReadOnly, bool? Connected, bool? DiscardWrites = null);

/// <param name="Labels">What selectors see: <paramref name="ReportedLabels"/> overridden by <paramref name="CentralLabels"/>.</param>
/// <param name="Site">The <c>site</c> label, if any.</param>
public sealed record AgentView(
    string Id, bool Online, DateTimeOffset? StatusAt, DateTimeOffset? ReportedAt, string? Version,
    IReadOnlyDictionary<string, string> Labels, IReadOnlyList<DriveView>? Drives, IReadOnlyList<CachedImageView>? Cache,
    IReadOnlyList<TransferView>? Transfers, long? FreeBytes, long? TotalBytes, long? AppliedGeneration, string? LastError,
    DesiredView? Desired, string? Site, IReadOnlyDictionary<string, string>? ReportedLabels, IReadOnlyDictionary<string, string> CentralLabels);

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

/// <param name="ResumesAt">A <c>waiting</c> pull (outside its download windows): when the next window opens.</param>
public sealed record TransferView(string Digest, long BytesDone, long BytesTotal, string State, string? Error, DateTimeOffset? ResumesAt = null);

/// <param name="Staged">Images the agent holds in its cache for a later attach (a stageOnly rollout).</param>
public sealed record DesiredView(long Generation, IReadOnlyList<DesiredDriveView> Drives, long? MaxBytesPerSecond, IReadOnlyList<StagedView>? Staged = null)
{
    public static DesiredView From(DesiredState state) =>
        new(state.Generation, state.Drives.Select(d => new DesiredDriveView(d.Index, d.ImageName, d.ImageDigest, FleetEndpoints.ModeName(d.Mode), d.ReadOnly, d.Connected,
            d.Pull is { } pull ? PullView.From(pull) : null)).ToList(),
            state.MaxBytesPerSecond, state.Prefetch?.Select(p => new StagedView(p.ImageName, p.ImageDigest, p.Pull is { } pull ? PullView.From(pull) : null)).ToList());
}

public sealed record StagedView(string? Image, string Digest, PullView? Pull = null);

/// <param name="Pull">How the agent may pull this drive's image (a rollout's download windows and share of its site's budget).</param>
public sealed record DesiredDriveView(int Index, string? Image, string? Digest, string? Mode, bool ReadOnly, bool Connected, PullView? Pull = null);

public sealed record PullView(long? MaxBytesPerSecond, IReadOnlyList<MsdFleet.Coordinator.Rollouts.WindowSpec>? Windows)
{
    public static PullView From(PullPolicy pull) => new(pull.MaxBytesPerSecond, MsdFleet.Coordinator.Rollouts.WindowSpecs.FromWire(pull.Windows));
}
