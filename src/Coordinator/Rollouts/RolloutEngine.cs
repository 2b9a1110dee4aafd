using System.Security.Claims;
using System.Text.Json;
using MsdFleet.Coordinator.Auth;
using MsdFleet.Coordinator.Catalog;
using MsdFleet.Coordinator.Fleet;
using MsdFleet.Coordinator.State;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.Coordinator.Rollouts;

/// <summary>
/// Runs rollouts, on the elected leader only. Each round (every second, and at once when an agent reports)
/// it takes every active rollout one step: agents assigned are checked against what they report
/// (<c>pulling → succeeded | failed | timed-out</c>); the failure threshold is applied; the next agents of the
/// current wave are assigned — only online ones, at most <c>maxConcurrentPulls</c> at a time — through the same
/// <see cref="DriveAssignment"/> use case as a person's PUT; a wave starts only when the one before has ended;
/// offline agents wait for their turn until the rollout's deadline, then are skipped.
/// <para>
/// Exactly once: an execution is claimed (<c>queued → starting</c>) by a conditional UPDATE before its drive is
/// assigned, and recorded as <c>pulling</c> with the generation after. A leader killed in between leaves it
/// <c>starting</c>; the next leader finds the assignment in the desired state (then it only records it) or
/// makes it — the assignment is the same either way, so no agent is commanded twice with different content.
/// State lives in the database, so a restart or a change of leader carries on where it stopped.
/// </para>
/// </summary>
public sealed partial class RolloutEngine(RolloutStore store, LeaderLease leader, FleetRegistry registry, FleetView fleet, DesiredStateStore desired, ImageCatalog catalog,
    DriveAssignment assignment, Messaging.IDesiredStatePublisher publisher, LiveEventPublisher events, TimeProvider time, ILogger<RolloutEngine> logger)
    : BackgroundService
{
    private static readonly TimeSpan Round = TimeSpan.FromSeconds(1);
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly WakeSignal _wake = new();
    private volatile bool _anyActive = true;

    /// <summary>Asks for a round now (a rollout was created or changed).</summary>
    public void Wake() => _wake.Wake();

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // An agent's report can end its execution: look at once — but only while there is a rollout to look at, so a
        // fleet of reporting agents costs no database round trips when nothing is rolling out.
        registry.Changed += _ =>
        {
            if (_anyActive)
                Wake();
        };
        await leader.FirstRound.WaitAsync(stoppingToken);
        while (!stoppingToken.IsCancellationRequested)
        {
            if (leader.IsLeader)
            {
                try
                {
                    var active = await store.ActiveAsync(stoppingToken);
                    _anyActive = active.Count > 0;
                    foreach (var rollout in active)
                    {
                        try
                        {
                            await StepAsync(rollout, stoppingToken);
                        }
                        catch (Exception ex) when (ex is not OperationCanceledException && !StateDatabase.IsUnavailable(ex))
                        {
                            // One rollout's fault must not stop the others, or the Coordinator: said, and tried again next round.
                            Log.StepFailed(logger, rollout.Id, ex);
                        }
                    }
                }
                catch (Exception ex) when (StateDatabase.IsUnavailable(ex))
                {
                    Log.RoundFailed(logger, ex.Message);
                }
            }
            await _wake.WaitAsync(Round, stoppingToken);
        }
    }

    private static ClaimsPrincipal Actor(RolloutRow rollout) => new(new ClaimsIdentity(
        [new Claim(ClaimTypes.Name, $"rollout:{rollout.Id}"), new Claim(ClaimTypes.Role, Roles.Operator)], "rollout"));

    /// <summary>One step of one rollout; publishes a live event when anything changed.</summary>
    public async Task StepAsync(RolloutRow rollout, CancellationToken ct)
    {
        var spec = RolloutStore.Spec(rollout);
        var executions = await store.ExecutionsAsync(rollout.Id, ct);
        var now = time.GetUtcNow();
        var changed = false;
        switch (rollout.State)
        {
            case RolloutStates.Scheduled:
                if (spec.StartAt is null || spec.StartAt <= now)
                    changed = await store.SetStateAsync(rollout.Id, [RolloutStates.Scheduled], RolloutStates.Running, null, ct);
                break;
            case RolloutStates.Cancelling:
                changed = await CancelStepAsync(rollout, spec, executions, ct);
                break;
            default:
                changed = await ObserveAsync(rollout, spec, executions, now, ct);
                if (rollout.State == RolloutStates.Running)
                    changed |= await AdvanceAsync(rollout, spec, changed ? await store.ExecutionsAsync(rollout.Id, ct) : executions, now, ct);
                break;
        }
        if (changed && await store.GetAsync(rollout.Id, ct) is { } after)
            events.Publish("rollout", RolloutView.From(after, await store.ExecutionsAsync(rollout.Id, ct)));
    }

    /// <summary>Assigned agents against their reports; executions a dead leader left half-started.</summary>
    private async Task<bool> ObserveAsync(RolloutRow rollout, RolloutSpec spec, IReadOnlyList<ExecutionRow> executions, DateTimeOffset now, CancellationToken ct)
    {
        var changed = false;
        var outcomes = new List<ExecutionChange>();
        foreach (var e in executions)
        {
            if (e.State == ExecutionStates.Starting)
            {
                changed |= await RecoverStartAsync(rollout, spec, e, ct);
                continue;
            }
            if (e.State is not (ExecutionStates.Pulling or ExecutionStates.Staged) || e.Generation is not { } generation)
                continue;
            var (outcome, error) = Outcome(registry.Get(e.AgentId)?.Report, spec, generation);
            if (outcome is null && e.StartedAtMs is { } started && spec.ExecutionTimeoutSeconds > 0
                && now - DateTimeOffset.FromUnixTimeMilliseconds(started) > TimeSpan.FromSeconds(spec.ExecutionTimeoutSeconds))
                (outcome, error) = (ExecutionStates.TimedOut, $"the agent did not report the image {(spec.StageOnly ? "staged" : "attached")} within {spec.ExecutionTimeoutSeconds} s");
            if (outcome is null && spec.ExecutionTimeoutSeconds == 0 && now > spec.Deadline)
                (outcome, error) = (ExecutionStates.TimedOut, $"the rollout's deadline passed before the agent reported the image {(spec.StageOnly ? "staged" : "attached")}");
            if (outcome is not null && outcome != e.State)
                outcomes.Add(new ExecutionChange(e.AgentId, e.State, outcome, error));
        }
        // All of this round's outcomes in one transaction (10,000 agents reporting attached are one write, not 10,000).
        await store.TransitionManyAsync(rollout.Id, outcomes, ct);
        return changed || outcomes.Count > 0;
    }

    /// <summary>
    /// What the agent's report says about its execution: done, failed (with the agent's error), staged (in its cache, not yet
    /// attached), or not yet (null). A stageOnly execution is done when the image is in the cache.
    /// </summary>
    internal static (string? State, string? Error) Outcome(AgentReport? report, RolloutSpec spec, long generation)
    {
        if (report is null)
            return (null, null);
        if (report.Transfers.FirstOrDefault(t => t.ImageDigest == spec.Digest && t.State == TransferState.Failed) is { } failed)
            return (ExecutionStates.Failed, failed.Error ?? "the pull failed");
        var cached = report.Cache.Any(c => c.ImageDigest == spec.Digest);
        if (spec.StageOnly)
            return cached ? (ExecutionStates.Succeeded, null) : (null, null);
        if (report.AppliedGeneration < generation)
            return cached ? (ExecutionStates.Staged, null) : (null, null);
        var drive = report.Drives.FirstOrDefault(d => d.Index == spec.Drive);
        if (drive?.Error is { } driveError)
            return (ExecutionStates.Failed, driveError);
        if (drive?.ImageDigest == spec.Digest && drive.Connected == spec.Connect)
            return (ExecutionStates.Succeeded, null);
        if (report.LastError is { } lastError)
            return (ExecutionStates.Failed, lastError);
        return cached ? (ExecutionStates.Staged, null) : (null, null);
    }

    /// <summary>Whether the agent's desired state already carries this rollout's assignment (staged, or on its drive).</summary>
    private static bool Carries(DesiredState? state, RolloutSpec spec) => spec.StageOnly
        ? state?.Prefetch?.Any(p => p.ImageDigest == spec.Digest) == true
        : state?.Drives.FirstOrDefault(d => d.Index == spec.Drive)?.ImageDigest == spec.Digest;

    private async Task<bool> RecoverStartAsync(RolloutRow rollout, RolloutSpec spec, ExecutionRow e, CancellationToken ct)
    {
        var current = await desired.GetFreshAsync(e.AgentId, ct);
        if (Carries(current, spec))
        {
            // The dead leader may have stored the assignment and stopped before publishing it: publish (again) —
            // the newest generation, never an older one, so a repeat is harmless.
            await publisher.PublishDesiredAsync(e.AgentId, ct);
            return await store.TransitionAsync(rollout.Id, e.AgentId, ExecutionStates.Starting, ExecutionStates.Pulling, ct, generation: current!.Generation, started: true);
        }
        return await store.TransitionAsync(rollout.Id, e.AgentId, ExecutionStates.Starting, ExecutionStates.Queued, ct);
    }

    /// <summary>The failure threshold, the deadline, the end, and the next agents of the current wave.</summary>
    private async Task<bool> AdvanceAsync(RolloutRow rollout, RolloutSpec spec, IReadOnlyList<ExecutionRow> executions, DateTimeOffset now, CancellationToken ct)
    {
        var ended = executions.Where(e => e.State is ExecutionStates.Succeeded or ExecutionStates.Failed or ExecutionStates.TimedOut).ToList();
        var failures = ended.Count(e => ExecutionStates.IsFailure(e.State));
        if (ended.Count >= spec.FailureThreshold.MinExecuted && failures * 100 > spec.FailureThreshold.Percent * ended.Count)
        {
            var reason = $"failure threshold: {failures} of {ended.Count} executions failed ({failures * 100 / ended.Count}% > {spec.FailureThreshold.Percent}%); " +
                "no more agents are assigned. Fix the cause and retry the failed ones (retry-failed), or cancel.";
            if (await store.SetStateAsync(rollout.Id, [RolloutStates.Running], RolloutStates.Failed, reason, ct))
                Log.Stopped(logger, rollout.Id, reason);
            return true;
        }
        var changed = false;
        if (now > spec.Deadline)
        {
            foreach (var e in executions.Where(e => e.State == ExecutionStates.Queued))
                changed |= await store.TransitionAsync(rollout.Id, e.AgentId, ExecutionStates.Queued, ExecutionStates.Skipped, ct,
                    registry.Get(e.AgentId)?.Online == true ? "the rollout's deadline passed" : "offline until the rollout's deadline");
            if (changed)
                executions = await store.ExecutionsAsync(rollout.Id, ct);
        }
        var open = executions.Where(e => !ExecutionStates.IsTerminal(e.State)).ToList();
        if (open.Count == 0)
        {
            var counts = executions.GroupBy(e => e.State).ToDictionary(g => g.Key, g => g.Count());
            var clean = executions.All(e => e.State == ExecutionStates.Succeeded);
            var summary = string.Join(", ", counts.OrderBy(c => c.Key, StringComparer.Ordinal).Select(c => $"{c.Value} {c.Key}"));
            return await store.SetStateAsync(rollout.Id, [RolloutStates.Running], clean ? RolloutStates.Succeeded : RolloutStates.Finished, summary, ct) | changed;
        }
        var wave = open.Min(e => e.Wave);
        var pulling = open.Where(e => ExecutionStates.IsPulling(e.State)).ToList();
        var room = spec.MaxConcurrentPulls is { } max ? Math.Max(0, max - pulling.Count) : int.MaxValue;
        var perSite = pulling.GroupBy(e => SiteOf(e.AgentId), StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        var ready = new List<ExecutionRow>();
        foreach (var e in open.Where(e => e.Wave == wave && e.State == ExecutionStates.Queued && registry.Get(e.AgentId)?.Online == true))
        {
            if (ready.Count >= room)
                break;
            var site = SiteOf(e.AgentId);
            if (spec.MaxConcurrentPullsPerSite is { } siteMax && perSite.GetValueOrDefault(site) >= siteMax)
                continue; // this site is full; another site's agent may go
            perSite[site] = perSite.GetValueOrDefault(site) + 1;
            ready.Add(e);
        }
        if (ready.Count == 0)
            return changed;
        var entry = await catalog.GetAsync(spec.Image, ct);
        if (entry?.Digest != spec.Digest)
        {
            var reason = entry is null
                ? $"the image '{spec.Image}' was deleted; no more agents are assigned."
                : $"the image name '{spec.Image}' now points to {entry.Digest}, not the {spec.Digest} this rollout was created for; no more agents are assigned. Create a new rollout.";
            return await store.SetStateAsync(rollout.Id, [RolloutStates.Running], RolloutStates.Failed, reason, ct);
        }
        var actor = Actor(rollout);
        var policy = PolicyOf(spec);
        // A batch at a time: claimed in one statement, assigned in one transaction, published pipelined, recorded in one
        // transaction — so 10,000 agents cost a few round trips, not 40,000. A leader killed anywhere in between leaves
        // them 'starting'; the next leader's RecoverStartAsync finishes each from the desired state.
        foreach (var batch in ready.Chunk(BatchSize))
        {
            var claimed = await store.ClaimAsync(rollout.Id, batch.Select(e => e.AgentId).ToList(), ct);
            if (claimed.Count == 0)
                continue;
            changed = true;
            var previous = claimed.ToDictionary(id => id, id => PreviousOf(desired.Get(id), spec), StringComparer.Ordinal);
            var results = await assignment.AssignManyAsync(claimed, spec.Drive, new DriveRequest(spec.Image, spec.Mode, spec.ReadOnly, spec.Connect), actor, ct, policy,
                stage: spec.StageOnly);
            await store.TransitionManyAsync(rollout.Id, results.Select(r => r.Value.State is { } state
                ? new ExecutionChange(r.Key, ExecutionStates.Starting, ExecutionStates.Pulling, Generation: state.Generation, Previous: previous[r.Key], Started: true)
                // Refused like a person's request would be (unsaved writes on the drive, the agent deleted …): that agent failed.
                : new ExecutionChange(r.Key, ExecutionStates.Starting, ExecutionStates.Failed, r.Value.Error!.Message)).ToList(), ct);
        }
        return changed;
    }

    private const int BatchSize = 500;

    /// <summary>What a revert puts back: the drive as it was (JSON of a <see cref="DriveRequest"/>), or whether the image was staged before.</summary>
    private static string PreviousOf(DesiredState? before, RolloutSpec spec)
    {
        if (spec.StageOnly)
            return Carries(before, spec) ? StagedBefore : NotStagedBefore;
        var previous = before?.Drives.FirstOrDefault(d => d.Index == spec.Drive);
        return JsonSerializer.Serialize(previous is null || previous.ImageName is null
            ? new DriveRequest(null, null, null, null)
            : new DriveRequest(previous.ImageName, FleetEndpoints.ModeName(previous.Mode), previous.ReadOnly, previous.Connected), Json);
    }

    private const string StagedBefore = "{\"staged\":true}";
    private const string NotStagedBefore = "{\"staged\":false}";

    /// <summary>The agent's site (label <c>site</c>; "" without one — those share one budget too).</summary>
    private string SiteOf(string agentId) => fleet.LabelsOf(agentId).GetValueOrDefault("site") ?? "";

    /// <summary>
    /// What travels with each assignment in the signed desired state: the download windows, and the pull's share of its
    /// site's budget — the budget split evenly among the site's concurrent pulls, so the site's pulls together never exceed
    /// it, even while the Coordinator is away and nobody could re-divide it.
    /// </summary>
    internal static PullPolicy? PolicyOf(RolloutSpec spec)
    {
        long? share = spec.SiteMaxBytesPerSecond is { } budget ? budget / Math.Max(1, spec.MaxConcurrentPullsPerSite ?? 1) : null;
        var windows = WindowSpecs.ToWire(spec.DownloadWindows);
        return share is null && windows is null ? null : new PullPolicy { MaxBytesPerSecond = share, Windows = windows };
    }

    /// <summary>A cancel: queued agents are dropped; with revert, assigned agents get back the drive they had (unless someone changed it since).</summary>
    private async Task<bool> CancelStepAsync(RolloutRow rollout, RolloutSpec spec, IReadOnlyList<ExecutionRow> executions, CancellationToken ct)
    {
        var changed = await store.CancelQueuedAsync(rollout.Id, ct) > 0;
        var actor = Actor(rollout);
        foreach (var e in executions.Where(e => e.State is ExecutionStates.Starting or ExecutionStates.Pulling or ExecutionStates.Staged or ExecutionStates.Succeeded
            or ExecutionStates.Failed or ExecutionStates.TimedOut))
        {
            if (e.State == ExecutionStates.Starting)
            {
                changed |= await RecoverStartAsync(rollout, spec, e, ct);
                continue; // the next step reverts it, now that it is recorded
            }
            if (rollout.Revert == 0 || e.Previous is null)
            {
                if (e.State is ExecutionStates.Pulling or ExecutionStates.Staged)
                    changed |= await store.TransitionAsync(rollout.Id, e.AgentId, e.State, ExecutionStates.Cancelled, ct, "cancelled; the drive was left as assigned");
                continue;
            }
            var current = await desired.GetFreshAsync(e.AgentId, ct);
            if (!Carries(current, spec))
            {
                changed |= await store.TransitionAsync(rollout.Id, e.AgentId, e.State, ExecutionStates.Cancelled, ct, "the drive was changed since; left as it is");
                continue;
            }
            try
            {
                if (!spec.StageOnly)
                    await assignment.AssignAsync(e.AgentId, spec.Drive, JsonSerializer.Deserialize<DriveRequest>(e.Previous, Json), actor, ct);
                else if (e.Previous == NotStagedBefore)
                    await assignment.UnstageAsync(e.AgentId, spec.Digest, actor, ct);
                changed |= await store.TransitionAsync(rollout.Id, e.AgentId, e.State, ExecutionStates.Reverted, ct);
            }
            catch (ApiException ex)
            {
                changed |= await store.TransitionAsync(rollout.Id, e.AgentId, e.State, ExecutionStates.Cancelled, ct, $"could not revert: {ex.Message}");
            }
        }
        var left = (await store.ExecutionsAsync(rollout.Id, ct)).Count(e => e.State is ExecutionStates.Queued or ExecutionStates.Starting or ExecutionStates.Pulling
            or ExecutionStates.Staged || (rollout.Revert == 1 && e.Previous is not null && e.State is ExecutionStates.Succeeded or ExecutionStates.Failed or ExecutionStates.TimedOut));
        if (left == 0)
            changed |= await store.SetStateAsync(rollout.Id, [RolloutStates.Cancelling], RolloutStates.Cancelled, rollout.Reason, ct);
        return changed;
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Rollout round failed ({Reason}); retrying")]
        public static partial void RoundFailed(ILogger logger, string reason);

        [LoggerMessage(3, LogLevel.Error, "Rollout {Id}: a step failed; it is tried again next round")]
        public static partial void StepFailed(ILogger logger, string id, Exception exception);

        [LoggerMessage(2, LogLevel.Warning, "Rollout {Id} stopped: {Reason}")]
        public static partial void Stopped(ILogger logger, string id, string reason);
    }
}
