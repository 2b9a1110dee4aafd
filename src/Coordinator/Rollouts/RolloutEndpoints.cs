using System.Globalization;
using System.Security.Claims;
using System.Text.Json;
using MsdFleet.Coordinator.Auth;
using MsdFleet.Coordinator.Catalog;
using MsdFleet.Coordinator.Fleet;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Rollouts;

/// <summary>
/// <c>/api/v1/rollouts</c>: put an image on a drive of every agent a selector matches, in waves, stopping when
/// too many fail. Created here (validated, its agents and waves fixed at creation); run by the leader's
/// <see cref="RolloutEngine"/>; paused, resumed, cancelled (optionally reverting the drives it changed) and
/// retried here. Every action is audited.
/// </summary>
public static class RolloutEndpoints
{
    public static WebApplication MapRolloutApi(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var rollouts = app.MapGroup("/api/v1/rollouts");
        rollouts.MapGet("/", async (RolloutStore store, CancellationToken ct) =>
        {
            var rows = await store.ListAsync(ct);
            var views = new List<RolloutView>(rows.Count);
            foreach (var row in rows)
                views.Add(RolloutView.From(row, await store.ExecutionsAsync(row.Id, ct)));
            return Results.Ok(views);
        }).RequireAuthorization(Policies.Read);
        rollouts.MapGet("/{id}", async (string id, RolloutStore store, CancellationToken ct) =>
        {
            var row = await store.GetAsync(id, ct) ?? throw NotFound(id);
            return Results.Ok(RolloutView.From(row, await store.ExecutionsAsync(id, ct)));
        }).RequireAuthorization(Policies.Read);
        rollouts.MapGet("/{id}/executions", async (string id, string? state, RolloutStore store, CancellationToken ct) =>
        {
            _ = await store.GetAsync(id, ct) ?? throw NotFound(id);
            var executions = await store.ExecutionsAsync(id, ct);
            return Results.Ok(executions.Where(e => state is null || e.State == state).Select(e => new
            {
                e.AgentId, wave = e.Wave, e.State, e.Error, e.Generation,
                startedAt = e.StartedAtMs is { } s ? DateTimeOffset.FromUnixTimeMilliseconds(s) : (DateTimeOffset?)null,
                updatedAt = DateTimeOffset.FromUnixTimeMilliseconds(e.UpdatedAtMs),
            }));
        }).RequireAuthorization(Policies.Read);
        rollouts.MapPost("/", CreateAsync).RequireAuthorization(Policies.Operate);
        rollouts.MapPost("/{id}/pause", (string id, RolloutStore store, RolloutEngine engine, AuditLog audit, ClaimsPrincipal user, CancellationToken ct) =>
            ActAsync(id, "pause", [RolloutStates.Running, RolloutStates.Scheduled], RolloutStates.Paused, store, engine, audit, user, ct)).RequireAuthorization(Policies.Operate);
        rollouts.MapPost("/{id}/resume", (string id, RolloutStore store, RolloutEngine engine, AuditLog audit, ClaimsPrincipal user, CancellationToken ct) =>
            ActAsync(id, "resume", [RolloutStates.Paused], RolloutStates.Running, store, engine, audit, user, ct)).RequireAuthorization(Policies.Operate);
        rollouts.MapPost("/{id}/cancel", async (string id, CancelRequest? body, RolloutStore store, RolloutEngine engine, AuditLog audit, ClaimsPrincipal user,
            CancellationToken ct) =>
        {
            var row = await store.GetAsync(id, ct) ?? throw NotFound(id);
            var revert = body?.Revert ?? false;
            if (!await store.SetStateAsync(id, RolloutStates.Active, RolloutStates.Cancelling, revert ? "cancelled; drives reverted" : "cancelled", ct, revert))
                throw WrongState(row, "cancel");
            await audit.RecordAsync(user, "rollout.cancel", id, revert ? "revert" : "leave drives as assigned", ct);
            engine.Wake();
            return Results.Accepted($"/api/v1/rollouts/{id}", RolloutView.From((await store.GetAsync(id, ct))!, await store.ExecutionsAsync(id, ct)));
        }).RequireAuthorization(Policies.Operate);
        rollouts.MapPost("/{id}/retry-failed", async (string id, RolloutStore store, RolloutEngine engine, AuditLog audit, ClaimsPrincipal user, CancellationToken ct) =>
        {
            var row = await store.GetAsync(id, ct) ?? throw NotFound(id);
            if (row.State is not (RolloutStates.Failed or RolloutStates.Finished or RolloutStates.Running or RolloutStates.Paused))
                throw WrongState(row, "retry-failed");
            var requeued = await store.RequeueFailedAsync(id, ct);
            await store.SetStateAsync(id, [RolloutStates.Failed, RolloutStates.Finished], RolloutStates.Running, null, ct);
            await audit.RecordAsync(user, "rollout.retry-failed", id, $"{requeued} executions queued again", ct);
            engine.Wake();
            return Results.Ok(RolloutView.From((await store.GetAsync(id, ct))!, await store.ExecutionsAsync(id, ct)));
        }).RequireAuthorization(Policies.Operate);
        return app;
    }

    private static async Task<IResult> ActAsync(string id, string action, string[] from, string to, RolloutStore store, RolloutEngine engine, AuditLog audit,
        ClaimsPrincipal user, CancellationToken ct)
    {
        var row = await store.GetAsync(id, ct) ?? throw NotFound(id);
        if (!await store.SetStateAsync(id, from, to, row.Reason, ct))
            throw WrongState(row, action);
        await audit.RecordAsync(user, "rollout." + action, id, null, ct);
        engine.Wake();
        return Results.Ok(RolloutView.From((await store.GetAsync(id, ct))!, await store.ExecutionsAsync(id, ct)));
    }

    private static async Task<IResult> CreateAsync(RolloutRequest? request, RolloutStore store, RolloutEngine engine, ImageCatalog catalog, FleetView fleet,
        AuditLog audit, TimeProvider time, ClaimsPrincipal user, CancellationToken ct)
    {
        if (request is null)
            throw ApiException.BadRequest("invalid-body", "Send {\"name\", \"image\", \"mode\", \"selector\", \"waves\" …} as JSON.");
        if (request.Unknown is { Count: > 0 } unknown)
            throw ApiException.BadRequest("unknown-field", $"Unknown field '{unknown.Keys.First()}'; nothing was started.");
        if (string.IsNullOrWhiteSpace(request.Name) || request.Name.Length > 100 || request.Name.Any(char.IsControl))
            throw ApiException.BadRequest("invalid-name", "name must be 1-100 characters without control characters.");
        if (!NameRules.TryValidateImageName(request.Image, out var imageError))
            throw ApiException.BadRequest("invalid-image-name", imageError);
        var drive = request.Drive ?? 0;
        if (drive is < 0 or >= DriveLimits.MaxDrives)
            throw ApiException.BadRequest("invalid-drive", $"drive must be 0..{DriveLimits.MaxDrives - 1}.");
        var stageOnly = request.StageOnly ?? false;
        if (stageOnly && request.Connect == true)
            throw ApiException.BadRequest("invalid-stage-only", "stageOnly pulls into the agents' caches and attaches nothing; leave out connect (a later rollout attaches).");
        if (!stageOnly && request.Mode is not ("cdrom" or "flash"))
            throw ApiException.BadRequest("invalid-mode", "mode must be \"cdrom\" or \"flash\".");
        if (stageOnly && request.Mode is not (null or "cdrom" or "flash"))
            throw ApiException.BadRequest("invalid-mode", "mode must be \"cdrom\" or \"flash\" (or left out with stageOnly).");
        var readOnly = request.ReadOnly ?? true;
        if (request.Mode == "cdrom" && !readOnly)
            throw ApiException.BadRequest("invalid-mode", "A CD-ROM is always read-only; use mode \"flash\" for a writable drive.");
        if (!LabelSelector.TryParse(request.Selector, out var selector, out var selectorError))
            throw ApiException.BadRequest("invalid-selector", selectorError);
        var threshold = request.FailureThreshold ?? new FailureThreshold();
        if (threshold.Percent is < 0 or > 100)
            throw ApiException.BadRequest("invalid-threshold", "failureThreshold.percent must be between 0 and 100.");
        if (threshold.MinExecuted < 1)
            throw ApiException.BadRequest("invalid-threshold", "failureThreshold.minExecuted must be at least 1.");
        if (request.MaxConcurrentPulls is < 1)
            throw ApiException.BadRequest("invalid-max-concurrent-pulls", "maxConcurrentPulls must be at least 1 (or left out for no limit).");
        if (request.MaxConcurrentPullsPerSite is < 1)
            throw ApiException.BadRequest("invalid-max-concurrent-pulls", "maxConcurrentPullsPerSite must be at least 1 (or left out for no limit).");
        if (request.SiteMaxBytesPerSecond is < 1024)
            throw ApiException.BadRequest("invalid-bandwidth", "siteMaxBytesPerSecond must be at least 1024 (or left out for no budget).");
        var perSite = request.MaxConcurrentPullsPerSite ?? (request.SiteMaxBytesPerSecond is null ? null : 1);
        if (request.SiteMaxBytesPerSecond / perSite is < 1024)
            throw ApiException.BadRequest("invalid-bandwidth", $"siteMaxBytesPerSecond {request.SiteMaxBytesPerSecond} split among {perSite} pulls per site leaves under 1 KiB/s each.");
        // With download windows a pull may wait for hours: no timeout unless one is asked for (the deadline still ends the rollout).
        var timeout = request.ExecutionTimeoutSeconds ?? (request.DownloadWindows is { Count: > 0 } ? 0 : 1800);
        if (request.ExecutionTimeoutSeconds is < 10 or > 7 * 86400)
            throw ApiException.BadRequest("invalid-execution-timeout", "executionTimeoutSeconds must be between 10 and 604800.");
        var now = time.GetUtcNow();
        if (request.StartAt is { } startAt && startAt > now.AddDays(30))
            throw ApiException.BadRequest("invalid-start", "startAt must be within 30 days.");
        var deadlineHours = request.DeadlineHours ?? 24;
        if (deadlineHours is < 1 or > 720)
            throw ApiException.BadRequest("invalid-deadline", "deadlineHours must be between 1 and 720.");
        var waves = ParseWaves(request.Waves);
        var deadline = (request.StartAt is { } begins && begins > now ? begins : now).AddHours(deadlineHours);
        var windows = WindowSpecs.Normalize(request.DownloadWindows, request.StartAt is { } b && b > now ? b : now, deadline);

        var entry = await catalog.GetAsync(request.Image, ct) ?? throw CatalogEndpoints.ImageNotFound(request.Image);
        var ids = (await fleet.KnownAgentIdsAsync(ct)).Where(id => selector.Matches(fleet.LabelsOf(id))).ToList();
        if (ids.Count == 0)
            throw ApiException.Conflict("selector-matches-nothing", $"The selector '{selector}' matches no agent; nothing was started.");
        var plan = Plan(ids, waves);
        var spec = new RolloutSpec
        {
            Image = request.Image,
            Digest = entry.Digest,
            Drive = drive,
            Mode = request.Mode ?? "cdrom",
            ReadOnly = readOnly,
            Connect = !stageOnly && (request.Connect ?? true),
            StageOnly = stageOnly,
            SiteMaxBytesPerSecond = request.SiteMaxBytesPerSecond,
            MaxConcurrentPullsPerSite = perSite,
            DownloadWindows = windows,
            Selector = selector.ToString(),
            Waves = waves.Select(w => w.Text).ToList(),
            MaxConcurrentPulls = request.MaxConcurrentPulls,
            FailureThreshold = threshold,
            ExecutionTimeoutSeconds = timeout,
            StartAt = request.StartAt,
            Deadline = deadline,
        };
        var id = Guid.NewGuid().ToString("N")[..12];
        var state = request.StartAt is { } at && at > now ? RolloutStates.Scheduled : RolloutStates.Running;
        var conflicts = await store.CreateAsync(id, request.Name, spec, state, user.Identity?.Name ?? "unknown", plan, ct);
        if (conflicts.Count > 0)
            throw ApiException.Conflict("rollout-conflict",
                $"Another active rollout is changing drive {drive} of {conflicts.Count} of these agents ({string.Join(", ", conflicts.Take(10))}{(conflicts.Count > 10 ? ", …" : "")}); " +
                "pause or cancel it first. Nothing was started.");
        await audit.RecordAsync(user, "rollout.create", id,
            $"{request.Name}: {request.Image} ({entry.Digest}) {(stageOnly ? "staged on" : $"on drive {drive} of")} {ids.Count} agents matching '{selector}', waves {string.Join(" ", spec.Waves)}", ct);
        engine.Wake();
        return Results.Created($"/api/v1/rollouts/{id}", RolloutView.From((await store.GetAsync(id, ct))!, await store.ExecutionsAsync(id, ct)));
    }

    /// <summary>A wave's cumulative end: a count of agents, or a percentage of those matched.</summary>
    internal sealed record WaveEnd(string Text, int? Count, int? Percent);

    internal static IReadOnlyList<WaveEnd> ParseWaves(IReadOnlyList<JsonElement>? waves)
    {
        if (waves is null || waves.Count == 0)
            return [new WaveEnd("100%", null, 100)];
        if (waves.Count > 100)
            throw ApiException.BadRequest("invalid-waves", "At most 100 waves.");
        var parsed = new List<WaveEnd>();
        foreach (var w in waves)
        {
            var text = w.ValueKind switch
            {
                JsonValueKind.Number => w.GetRawText(),
                JsonValueKind.String => w.GetString()!.Trim(),
                _ => throw ApiException.BadRequest("invalid-waves", "Each wave is a count (10) or a percentage (\"25%\") of the matched agents, cumulative."),
            };
            if (text.EndsWith('%') && int.TryParse(text[..^1], NumberStyles.None, CultureInfo.InvariantCulture, out var percent) && percent is >= 1 and <= 100)
                parsed.Add(new WaveEnd($"{percent}%", null, percent));
            else if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var count) && count >= 1)
                parsed.Add(new WaveEnd(count.ToString(CultureInfo.InvariantCulture), count, null));
            else
                throw ApiException.BadRequest("invalid-waves", $"Wave '{text}' is neither a count ≥ 1 nor a percentage 1%-100%.");
        }
        // Cumulative: each ends after the one before. Two of a kind out of order, or equal, overlap.
        foreach (var (a, b) in parsed.Zip(parsed.Skip(1)))
        {
            if ((a.Count is { } ca && b.Count is { } cb && cb <= ca) || (a.Percent is { } pa && b.Percent is { } pb && pb <= pa))
                throw ApiException.BadRequest("overlapping-waves", $"Waves are cumulative ends and must grow: '{b.Text}' does not come after '{a.Text}'.");
        }
        if (parsed[^1].Percent is not 100 && parsed[^1].Count is null)
            throw ApiException.BadRequest("invalid-waves", "The last wave must reach every matched agent: end it with \"100%\".");
        return parsed;
    }

    /// <summary>Agents (in id order) to wave numbers; waves that come out empty for this many agents are dropped.</summary>
    internal static IReadOnlyList<(string AgentId, int Wave)> Plan(IReadOnlyList<string> agents, IReadOnlyList<WaveEnd> waves)
    {
        var total = agents.Count;
        var ends = waves.Select(w => Math.Min(total, w.Count ?? (int)Math.Ceiling(total * w.Percent!.Value / 100.0))).ToList();
        if (waves[^1].Count is { } lastCount && lastCount < total)
            throw ApiException.BadRequest("invalid-waves", $"The last wave ends at {lastCount} agents but {total} match; end it with \"100%\" or a count ≥ {total}.");
        for (var i = 1; i < ends.Count; i++)
        {
            if (ends[i] < ends[i - 1])
                throw ApiException.BadRequest("overlapping-waves", $"For {total} agents wave '{waves[i].Text}' ends at {ends[i]}, before '{waves[i - 1].Text}' ({ends[i - 1]}).");
        }
        var plan = new List<(string, int)>(total);
        var wave = 0;
        var start = 0;
        foreach (var end in ends)
        {
            if (end <= start)
                continue;
            for (var i = start; i < end; i++)
                plan.Add((agents[i], wave));
            wave++;
            start = end;
        }
        return plan;
    }

    private static ApiException NotFound(string id) => ApiException.NotFound("rollout-not-found", $"No rollout '{id}'.");

    private static ApiException WrongState(RolloutRow row, string action) =>
        ApiException.Conflict("rollout-state", $"Rollout '{row.Id}' is {row.State}; it cannot {action} now.");
}

public sealed record CancelRequest(bool? Revert);
