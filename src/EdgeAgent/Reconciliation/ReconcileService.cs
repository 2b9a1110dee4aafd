using System.Collections.Concurrent;
using System.Reflection;
using Microsoft.Extensions.Options;
using MsdFleet.EdgeAgent.Gadget;
using MsdFleet.EdgeAgent.Mqtt;
using MsdFleet.EdgeAgent.Storage;
using MsdFleet.EdgeAgent.Transfers;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Naming;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.EdgeAgent.Reconciliation;

/// <summary>
/// The level-triggered loop: observe (gadget + cache), plan with the pure <see cref="ReconcilePlanner"/>,
/// run the steps, report what is now true. Pulls run in the background and wake the loop when done, so
/// a long pull never delays an eject. Each pass survives its own failure; only shutdown ends the loop.
/// </summary>
public sealed partial class ReconcileService(
    DesiredStateHolder desired,
    IGadgetDriver gadget,
    LocalImageStore store,
    ImagePuller puller,
    ImageCache cache,
    StartupRecovery recovery,
    TransferTracker transfers,
    AgentMqttService mqtt,
    TopicNames topics,
    IOptions<AgentOptions> options,
    IOptions<GadgetOptions> gadgetOptions,
    TimeProvider time,
    ILogger<ReconcileService> logger) : BackgroundService
{
    private const int MaxLuns = 8;
    private static readonly string Version = typeof(ReconcileService).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0";
    private readonly ConcurrentDictionary<string, Task> _pulls = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, (DateTimeOffset RetryAt, int Failures)> _pullFailures = new(StringComparer.Ordinal);
    private readonly Dictionary<int, string> _driveErrors = [];
    private long _appliedGeneration;
    private bool _gadgetReady;
    private string? _lastError;
    private byte[]? _lastReportBody;
    private DateTimeOffset _lastReportAt;
    private volatile bool _forceReport = true;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        mqtt.Connected += () =>
        {
            _forceReport = true;
            desired.Poke();
        };
        var agentId = options.Value.Id;
        try
        {
            await recovery.RunAsync(desired.Current, stoppingToken);
        }
        catch (Exception ex) when (ex is IOException or GadgetException or UnauthorizedAccessException)
        {
            _lastError = $"Startup recovery failed: {ex.Message}";
            Log.PassFailed(logger, ex);
        }
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await PassAsync(stoppingToken);
                await ReportAsync(agentId, stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex)
            {
                _lastError = ex.Message;
                Log.PassFailed(logger, ex);
            }
            try
            {
                // While pulls run, wake every second to report progress.
                await desired.WaitForChangeAsync(_pulls.IsEmpty ? TimeSpan.FromSeconds(5) : TimeSpan.FromSeconds(1), stoppingToken);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
        await Task.WhenAll(_pulls.Values).ContinueWith(_ => { }, TaskScheduler.Default);
    }

    private async Task PassAsync(CancellationToken cancellationToken)
    {
        if (gadgetOptions.Value.Create && !_gadgetReady)
        {
            try
            {
                if (gadget.EnsureGadget())
                    Log.GadgetBuilt(logger, gadgetOptions.Value.GadgetName);
                _gadgetReady = true;
            }
            catch (GadgetException ex)
            {
                _lastError = ex.Message;
                Log.GadgetFailed(logger, -1, ex.Message);
                return;
            }
        }
        var state = desired.Current;
        var plan = ReconcilePlanner.Plan(state, Observe());
        var blocked = false;
        foreach (var step in plan)
        {
            try
            {
                switch (step)
                {
                    case DetachStep detach:
                        gadget.Eject(detach.Lun);
                        _driveErrors.Remove(detach.Lun);
                        Log.Detached(logger, detach.Lun);
                        await EventAsync(new AgentEvent { Kind = AgentEventKind.Detached, Message = $"LUN {detach.Lun} ejected" }, cancellationToken);
                        break;
                    case PullStep pull:
                        blocked = true;
                        StartPull(pull.Digest, cancellationToken);
                        break;
                    case AttachStep attach:
                        if (!await cache.VerifyAsync(attach.Digest, cancellationToken))
                        {
                            blocked = true;
                            _driveErrors[attach.Lun] = _lastError = $"Cached image {attach.Digest} failed verification before attach; it was quarantined and is pulled again.";
                            desired.Poke();
                            break;
                        }
                        cache.Touch(attach.Digest);
                        gadget.Attach(attach.Lun, store.ImagePath(attach.Digest), attach.Mode == DriveMode.Cdrom, attach.ReadOnly);
                        _driveErrors.Remove(attach.Lun);
                        Log.Attached(logger, attach.Lun, attach.Digest.ToString(), attach.Mode);
                        await EventAsync(new AgentEvent { Kind = AgentEventKind.Attached, ImageDigest = attach.Digest.ToString(), Message = $"LUN {attach.Lun} attached" }, cancellationToken);
                        break;
                    case UnsatisfiableStep unsatisfiable:
                        blocked = true;
                        _driveErrors[unsatisfiable.Lun] = unsatisfiable.Reason;
                        _lastError = unsatisfiable.Reason;
                        break;
                }
            }
            catch (GadgetException ex)
            {
                blocked = true;
                var lun = step switch { DetachStep d => d.Lun, AttachStep a => a.Lun, _ => -1 };
                _driveErrors[lun] = ex.Message;
                _lastError = ex.Message;
                Log.GadgetFailed(logger, lun, ex.Message);
            }
        }
        if (state is not null && !blocked)
        {
            _appliedGeneration = state.Generation;
            _lastError = null;
        }
    }

    private void StartPull(ImageDigest digest, CancellationToken cancellationToken)
    {
        var key = digest.ToString();
        if (_pulls.ContainsKey(key))
            return;
        if (_pullFailures.TryGetValue(key, out var failure) && failure.RetryAt > time.GetUtcNow())
            return;
        _pulls[key] = Task.Run(async () =>
        {
            try
            {
                await puller.PullAsync(digest, cancellationToken);
                _pullFailures.TryRemove(key, out _);
                await EventAsync(new AgentEvent { Kind = AgentEventKind.PullCompleted, ImageDigest = key }, cancellationToken);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
            }
            catch (Exception ex)
            {
                var failures = _pullFailures.TryGetValue(key, out var f) ? f.Failures + 1 : 1;
                _pullFailures[key] = (time.GetUtcNow() + TimeSpan.FromSeconds(Math.Min(300, 5 * Math.Pow(2, failures - 1))), failures);
                _lastError = $"Pull of {key} failed: {ex.Message}";
                Log.PullFailed(logger, key, ex);
                await EventAsync(new AgentEvent { Kind = AgentEventKind.PullFailed, ImageDigest = key, Message = ex.Message }, CancellationToken.None);
            }
            finally
            {
                _pulls.TryRemove(key, out _);
                desired.Poke();
            }
        }, CancellationToken.None);
    }

    private ObservedState Observe()
    {
        var luns = new Dictionary<int, ObservedLun>();
        for (var i = 0; i < MaxLuns; i++)
        {
            var lun = gadget.ReadLun(i);
            if (lun is null)
                continue;
            var digest = store.DigestOfImagePath(lun.File);
            var mode = !lun.HasMedium ? DriveMode.None : lun.Cdrom ? DriveMode.Cdrom : DriveMode.Flash;
            luns[i] = new ObservedLun(i, true, lun.HasMedium, digest, mode, lun.ReadOnly);
        }
        return new ObservedState
        {
            Luns = luns,
            CachedDigests = store.ListImages().Select(i => i.Digest.ToString()).ToHashSet(StringComparer.Ordinal),
        };
    }

    private async Task ReportAsync(string agentId, CancellationToken cancellationToken)
    {
        var observed = Observe();
        var hostState = gadget.ReadHostState();
        var (free, total) = store.Space();
        var report = new AgentReport
        {
            AgentVersion = Version,
            Labels = options.Value.Labels,
            Drives = observed.Luns.Values.OrderBy(l => l.Index).Select(l => new DriveReport
            {
                Index = l.Index,
                ImageDigest = l.ImageDigest?.ToString(),
                Mode = l.Mode,
                ReadOnly = l.ReadOnly,
                Connected = l.HasMedium,
                HostState = hostState,
                Error = _driveErrors.GetValueOrDefault(l.Index),
            }).ToList(),
            Cache = store.ListImages().Select(i => new CachedImageReport { ImageDigest = i.Digest.ToString(), Size = i.Size }).ToList(),
            FreeBytes = free,
            TotalBytes = total,
            Transfers = transfers.Snapshot(),
            AppliedGeneration = _appliedGeneration,
            LastError = desired.LastRejection ?? _lastError,
        };
        // Publish on change, on reconnect, and now and then as a heartbeat; free space alone is not a change.
        var body = ProtocolSerializer.Serialize(report with { FreeBytes = 0 });
        var now = time.GetUtcNow();
        if (!_forceReport && _lastReportBody is not null && body.AsSpan().SequenceEqual(_lastReportBody) && now - _lastReportAt < options.Value.ReportInterval)
            return;
        if (!mqtt.IsConnected)
            return;
        _forceReport = false;
        _lastReportBody = body;
        _lastReportAt = now;
        await mqtt.PublishAsync(topics.Reported(agentId), ProtocolSerializer.Serialize(report with { ReportedAtUnixMs = now.ToUnixTimeMilliseconds() }), true, cancellationToken);
        foreach (var transfer in report.Transfers)
        {
            await EventAsync(new AgentEvent
            {
                Kind = AgentEventKind.PullProgress,
                ImageDigest = transfer.ImageDigest,
                BytesDone = transfer.BytesDone,
                BytesTotal = transfer.BytesTotal,
            }, cancellationToken);
        }
    }

    private Task EventAsync(AgentEvent agentEvent, CancellationToken cancellationToken) =>
        mqtt.PublishAsync(topics.Events(options.Value.Id),
            ProtocolSerializer.Serialize(agentEvent with { AtUnixMs = time.GetUtcNow().ToUnixTimeMilliseconds() }), false, cancellationToken, EventLifetime);

    /// <summary>MQTT v5 message expiry of events: a progress line older than this is history, not news.</summary>
    public static readonly TimeSpan EventLifetime = TimeSpan.FromMinutes(2);

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Error, "Reconcile pass failed")]
        public static partial void PassFailed(ILogger logger, Exception exception);

        [LoggerMessage(2, LogLevel.Information, "LUN {Lun} ejected")]
        public static partial void Detached(ILogger logger, int lun);

        [LoggerMessage(3, LogLevel.Information, "LUN {Lun} attached {Digest} as {Mode}")]
        public static partial void Attached(ILogger logger, int lun, string digest, DriveMode mode);

        [LoggerMessage(4, LogLevel.Error, "Gadget operation on LUN {Lun} failed: {Reason}")]
        public static partial void GadgetFailed(ILogger logger, int lun, string reason);

        [LoggerMessage(6, LogLevel.Information, "Built and bound USB gadget {Gadget}")]
        public static partial void GadgetBuilt(ILogger logger, string gadget);

        [LoggerMessage(5, LogLevel.Error, "Pull of {Digest} failed")]
        public static partial void PullFailed(ILogger logger, string digest, Exception exception);
    }
}
