using Microsoft.Extensions.Options;
using MsdFleet.EdgeAgent.Gadget;
using MsdFleet.EdgeAgent.Mqtt;
using MsdFleet.EdgeAgent.Snapshots;
using MsdFleet.EdgeAgent.Storage;
using MsdFleet.EdgeAgent.Transfers;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Reconciliation;

/// <summary>
/// Executes one plan: gadget steps (detach, attach) and discards run inline, in plan order; pulls and
/// working copies are handed to the <see cref="StepScheduler"/>, and any running one the plan no longer
/// names is cancelled. Keeps what the reporter shows: per-drive errors, the last error, and the
/// generation the agent fully converged to. Called only from the reconcile loop, one pass at a time, so
/// most state needs no lock; the scheduler's callbacks run on other threads and touch only the concurrent
/// per-drive errors and <see cref="LastError"/> (a volatile reference).
/// </summary>
public sealed partial class PlanRunner(
    IGadgetDriver gadget,
    LocalImageStore store,
    ImageCache cache,
    WorkingCopyStore copies,
    ImagePuller puller,
    StepScheduler scheduler,
    DriveSnapshotter snapshots,
    BandwidthThrottle throttle,
    TransferTracker tracker,
    IAgentPublisher publisher,
    IOptions<AgentOptions> options,
    TimeProvider time,
    ILogger<PlanRunner> logger)
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<int, string> _driveErrors = new();
    // Per image being pulled: its live policy (windows, own cap), updated every pass; only the reconcile loop adds or removes.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, PullControl> _pulls = new(StringComparer.Ordinal);
    private volatile string? _lastError;

    public IReadOnlyDictionary<int, string> DriveErrors => _driveErrors;

    public string? LastError
    {
        get => _lastError;
        set => _lastError = value;
    }

    public long AppliedGeneration { get; private set; }

    public static string PullKey(ImageDigest digest) => "pull:" + digest;
    public static string CopyKey(int drive) => "copy:" + drive.ToString(System.Globalization.CultureInfo.InvariantCulture);
    public static string SnapshotKey(int drive) => "snapshot:" + drive.ToString(System.Globalization.CultureInfo.InvariantCulture);

    public async Task RunAsync(DesiredState? state, IReadOnlyList<PlanStep> plan, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(plan);
        // A changed cap applies to pulls already running: they share this one throttle.
        throttle.BytesPerSecond = state?.MaxBytesPerSecond ?? options.Value.MaxBytesPerSecond;
        var wanted = plan.Select(s => s switch
        {
            PullStep p => PullKey(p.Digest),
            CreateWorkingCopyStep c => CopyKey(c.Lun),
            SnapshotStep n => SnapshotKey(n.Lun),
            _ => null,
        }).OfType<string>().ToHashSet(StringComparer.Ordinal);
        // A running snapshot's drive is held, so the plan names it no more: it stays wanted while the drive still asks for it.
        foreach (var drive in state?.Drives ?? [])
            if (drive.Snapshot is not null)
                wanted.Add(SnapshotKey(drive.Index));
        scheduler.CancelExcept(wanted);
        foreach (var key in _pulls.Keys.Where(k => !wanted.Contains(k)))
            _pulls.TryRemove(key, out _);
        foreach (var pull in plan.OfType<PullStep>())
            _pulls.GetOrAdd(PullKey(pull.Digest), _ => new PullControl(time)).Set(pull.Policy);
        // A drive the plan leaves alone has converged: whatever went wrong with it before is history.
        var touched = plan.Select(DriveOf).ToHashSet();
        foreach (var drive in _driveErrors.Keys.Where(d => !touched.Contains(d)))
            _driveErrors.TryRemove(drive, out _);

        var blocked = false;
        foreach (var step in plan)
        {
            try
            {
                blocked |= await RunStepAsync(step, cancellationToken);
            }
            catch (GadgetException ex)
            {
                blocked = true;
                var lun = DriveOf(step);
                _driveErrors[lun] = ex.Message;
                LastError = ex.Message;
                Log.GadgetFailed(logger, lun, ex.Message);
            }
            catch (IOException ex) when (step is DiscardWorkingCopyStep discard)
            {
                blocked = true;
                _driveErrors[discard.Lun] = LastError = $"Removing the working copy of drive {discard.Lun} failed: {ex.Message}";
            }
        }
        if (state is not null && !blocked)
        {
            AppliedGeneration = state.Generation;
            LastError = null;
        }
    }

    private static int DriveOf(PlanStep step) => step switch
    {
        DetachStep d => d.Lun,
        AttachStep a => a.Lun,
        CreateWorkingCopyStep c => c.Lun,
        DiscardWorkingCopyStep r => r.Lun,
        UnsatisfiableStep u => u.Lun,
        SnapshotStep n => n.Lun,
        _ => -1,
    };

    /// <returns>True when the step leaves the desired state not yet reached.</returns>
    private async Task<bool> RunStepAsync(PlanStep step, CancellationToken cancellationToken)
    {
        switch (step)
        {
            case DetachStep detach:
                await gadget.EjectAsync(detach.Lun, cancellationToken);
                _driveErrors.TryRemove(detach.Lun, out _);
                Log.Detached(logger, detach.Lun);
                await EventAsync(new AgentEvent { Kind = AgentEventKind.Detached, Drive = detach.Lun, Message = $"Drive {detach.Lun} ejected" }, cancellationToken);
                return false;
            case DiscardWorkingCopyStep discard:
                copies.Discard(discard.Lun);
                Log.Discarded(logger, discard.Lun, discard.BaseDigest.ToString());
                await EventAsync(new AgentEvent { Kind = AgentEventKind.WorkingCopyDiscarded, Drive = discard.Lun, ImageDigest = discard.BaseDigest.ToString(),
                    Message = $"Working copy of drive {discard.Lun} discarded" }, cancellationToken);
                return false;
            case PullStep pull:
                StartPull(pull.Digest, _pulls[PullKey(pull.Digest)]);
                return true;
            case CreateWorkingCopyStep create:
                StartWorkingCopy(create.Lun, create.BaseDigest);
                return true;
            case SnapshotStep snapshot:
                StartSnapshot(snapshot.Lun, snapshot.Request);
                return true;
            case AttachStep attach:
                return await AttachAsync(attach, cancellationToken);
            case UnsatisfiableStep unsatisfiable:
                _driveErrors[unsatisfiable.Lun] = unsatisfiable.Reason;
                LastError = unsatisfiable.Reason;
                return true;
            default:
                throw new InvalidOperationException($"Unknown plan step {step.GetType().Name}.");
        }
    }

    private async Task<bool> AttachAsync(AttachStep attach, CancellationToken cancellationToken)
    {
        string path;
        if (attach.WorkingCopy)
        {
            // The server's own data: never checked against the base image, which it is meant to differ from.
            path = copies.ImagePath(attach.Lun);
        }
        else
        {
            if (!await cache.VerifyAsync(attach.Digest, cancellationToken))
            {
                _driveErrors[attach.Lun] = LastError = $"Cached image {attach.Digest} failed verification before attach; it was quarantined and is pulled again.";
                return true;
            }
            cache.Touch(attach.Digest);
            path = store.ImagePath(attach.Digest);
        }
        await gadget.AttachAsync(attach.Lun, path, attach.Mode == DriveMode.Cdrom, attach.ReadOnly, cancellationToken);
        _driveErrors.TryRemove(attach.Lun, out _);
        Log.Attached(logger, attach.Lun, attach.Digest.ToString(), attach.Mode, attach.WorkingCopy);
        await EventAsync(new AgentEvent
        {
            Kind = AgentEventKind.Attached, Drive = attach.Lun, ImageDigest = attach.Digest.ToString(),
            Message = attach.WorkingCopy ? $"Drive {attach.Lun} attached its working copy, read-write" : $"Drive {attach.Lun} attached",
        }, cancellationToken);
        return false;
    }

    private void StartPull(ImageDigest digest, PullControl control)
    {
        var key = digest.ToString();
        scheduler.Start(PullKey(digest), string.Empty, async ct =>
        {
            try
            {
                await PullInWindowsAsync(digest, control, ct);
            }
            finally
            {
                if (ct.IsCancellationRequested)
                    tracker.Remove(key); // nobody wants it any more: no transfer, waiting or not
            }
            await EventAsync(new AgentEvent { Kind = AgentEventKind.PullCompleted, ImageDigest = key }, ct);
        }, async ex =>
        {
            LastError = $"Pull of {key} failed: {ex.Message}";
            await EventAsync(new AgentEvent { Kind = AgentEventKind.PullFailed, ImageDigest = key, Message = ex.Message }, CancellationToken.None);
        });
    }

    /// <summary>
    /// Pulls while the image's download windows are open: outside them it waits (reported <c>Waiting</c>, with when the
    /// next opens); a pull running when its window closes is stopped — no more bytes move — and resumes from its journal
    /// in the next window. A change of windows in a newer desired state is looked at at once. Without windows: one pull.
    /// </summary>
    private async Task PullInWindowsAsync(ImageDigest digest, PullControl control, CancellationToken ct)
    {
        var key = digest.ToString();
        while (true)
        {
            var changed = control.Changed;
            var now = time.GetUtcNow();
            if (!DownloadSchedule.IsOpen(control.Policy?.Windows, now, out var change))
            {
                tracker.Waiting(key, change);
                Log.PullWaiting(logger, key, change);
                using var wake = CancellationTokenSource.CreateLinkedTokenSource(ct, changed);
                try
                {
                    // Re-read at least every minute: the wall clock may be set (NTP) while we wait.
                    var wait = change is { } opens ? opens - now : TimeSpan.FromMinutes(1);
                    await Task.Delay(wait < TimeSpan.FromMinutes(1) ? wait + TimeSpan.FromMilliseconds(20) : TimeSpan.FromMinutes(1), time, wake.Token);
                }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                    // the windows changed: look again
                }
                continue;
            }
            using var closes = change is { } end ? new CancellationTokenSource(end - now > TimeSpan.Zero ? end - now : TimeSpan.Zero, time) : new CancellationTokenSource();
            using var run = CancellationTokenSource.CreateLinkedTokenSource(ct, changed, closes.Token);
            try
            {
                await puller.PullAsync(digest, run.Token, control.Throttle);
                return;
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                Log.PullPaused(logger, key);
            }
        }
    }

    private void StartWorkingCopy(int drive, ImageDigest baseDigest)
    {
        scheduler.Start(CopyKey(drive), baseDigest.ToString(), async ct =>
        {
            // The base must be exactly the approved image before the server's copy is made from it.
            if (!await cache.VerifyAsync(baseDigest, ct))
                throw new PullException($"Cached image {baseDigest} failed verification before its working copy was made; it was quarantined and is pulled again.");
            var basePath = store.ImagePath(baseDigest);
            var size = new FileInfo(basePath).Length;
            using var reservation = await cache.ReserveAsync(baseDigest, SparseRegions.DataBytes(basePath, size), ct);
            var lastEvent = time.GetTimestamp();
            var progress = new SyncProgress(done =>
            {
                if (time.GetElapsedTime(lastEvent) < TimeSpan.FromSeconds(1))
                    return;
                lastEvent = time.GetTimestamp();
                _ = EventAsync(new AgentEvent { Kind = AgentEventKind.WorkingCopyProgress, Drive = drive, ImageDigest = baseDigest.ToString(), BytesDone = done, BytesTotal = size }, ct);
            });
            var cloned = await copies.CreateAsync(drive, baseDigest, basePath, progress, ct);
            Log.WorkingCopyCreated(logger, drive, baseDigest.ToString(), cloned ? "reflink clone" : "sparse copy");
            await EventAsync(new AgentEvent
            {
                Kind = AgentEventKind.WorkingCopyCreated, Drive = drive, ImageDigest = baseDigest.ToString(), BytesDone = size, BytesTotal = size,
                Message = cloned ? "reflink clone" : "sparse copy",
            }, ct);
        }, ex =>
        {
            _driveErrors[drive] = LastError = $"Making the working copy of drive {drive} failed: {ex.Message}";
            return Task.CompletedTask;
        });
    }

    private void StartSnapshot(int drive, SnapshotRequest request)
    {
        // Held before the job starts, so the next pass (which may come first) already leaves the drive alone.
        if (!snapshots.TryHold(drive))
            return;
        var started = scheduler.Start(SnapshotKey(drive), request.Id, ct => snapshots.RunAsync(drive, request, ct));
        if (started != StepScheduler.StartResult.Started)
            snapshots.Release(drive);
    }

    private Task EventAsync(AgentEvent agentEvent, CancellationToken cancellationToken) => publisher.PublishEventAsync(agentEvent, cancellationToken);

    /// <summary>An IProgress that reports on the calling thread (Progress&lt;T&gt; would post to the thread pool out of order).</summary>
    private sealed class SyncProgress(Action<long> report) : IProgress<long>
    {
        public void Report(long value) => report(value);
    }

    private static partial class Log
    {
        [LoggerMessage(2, LogLevel.Information, "Drive {Lun} ejected")]
        public static partial void Detached(ILogger logger, int lun);

        [LoggerMessage(3, LogLevel.Information, "Drive {Lun} attached {Digest} as {Mode} (working copy: {WorkingCopy})")]
        public static partial void Attached(ILogger logger, int lun, string digest, DriveMode mode, bool workingCopy);

        [LoggerMessage(4, LogLevel.Error, "Gadget operation on drive {Lun} failed: {Reason}")]
        public static partial void GadgetFailed(ILogger logger, int lun, string reason);

        [LoggerMessage(7, LogLevel.Warning, "Working copy of drive {Lun} (made from {Digest}) discarded")]
        public static partial void Discarded(ILogger logger, int lun, string digest);

        [LoggerMessage(9, LogLevel.Information, "Pull of {Digest} waits for its download window (opens {Opens})")]
        public static partial void PullWaiting(ILogger logger, string digest, DateTimeOffset? opens);

        [LoggerMessage(10, LogLevel.Information, "Pull of {Digest} paused: its download window closed (or changed)")]
        public static partial void PullPaused(ILogger logger, string digest);

        [LoggerMessage(8, LogLevel.Information, "Working copy of drive {Lun} made from {Digest} ({How})")]
        public static partial void WorkingCopyCreated(ILogger logger, int lun, string digest, string how);
    }
}
