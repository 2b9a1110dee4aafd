using System.Reflection;
using Microsoft.Extensions.Options;
using MsdFleet.EdgeAgent.Gadget;
using MsdFleet.EdgeAgent.Mqtt;
using MsdFleet.EdgeAgent.Snapshots;
using MsdFleet.EdgeAgent.Storage;
using MsdFleet.EdgeAgent.Transfers;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.EdgeAgent.Reconciliation;

/// <summary>
/// Publishes what is true: every drive the gadget has (where it lives, what it can do, what is attached,
/// its working copy, what the host read), the cache, transfers, the applied generation and the last
/// error. Publishes on change, on reconnect, and every <see cref="AgentOptions.ReportInterval"/> as a
/// heartbeat; free space alone is not a change. Progress of running pulls goes out as events.
/// </summary>
public sealed class AgentReporter(
    IGadgetDriver gadget,
    LocalImageStore store,
    TransferTracker transfers,
    DesiredStateHolder desired,
    PlanRunner runner,
    HostReadMonitor hostReads,
    DriveSnapshotter snapshots,
    IAgentPublisher publisher,
    IOptions<AgentOptions> options,
    TimeProvider time)
{
    private static readonly string Version = typeof(AgentReporter).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0";
    private byte[]? _lastReportBody;
    private DateTimeOffset _lastReportAt;
    private volatile bool _forceReport = true;

    /// <summary>The next report goes out even if nothing changed (after a reconnect).</summary>
    public void ForceNext() => _forceReport = true;

    public AgentReport Build(Observation observation, string? hostState)
    {
        ArgumentNullException.ThrowIfNull(observation);
        var (free, total) = store.Space();
        var reads = hostReads.Read(observation.Drives);
        return new AgentReport
        {
            AgentVersion = Version,
            Labels = options.Value.Labels,
            Drives = observation.Drives.OrderBy(d => d.Index).Select(d =>
            {
                var lun = observation.State.Luns[d.Index];
                var copy = observation.WorkingCopies.GetValueOrDefault(d.Index);
                return new DriveReport
                {
                    Index = d.Index,
                    ImageDigest = lun.ImageDigest?.ToString(),
                    Mode = lun.Mode,
                    ReadOnly = lun.ReadOnly,
                    Connected = lun.HasMedium,
                    HostState = hostState,
                    Error = runner.DriveErrors.GetValueOrDefault(d.Index),
                    Function = d.Function,
                    Lun = d.Lun,
                    CdromCapable = d.CdromCapable,
                    WritableCapable = d.WritableCapable,
                    WorkingCopy = copy is null ? null : new WorkingCopyReport
                    {
                        BaseDigest = copy.BaseDigest.ToString(),
                        Size = copy.Size,
                        UnsavedWrites = copy.UnsavedWrites,
                        Attached = lun.IsWorkingCopy,
                    },
                    HostRead = reads.GetValueOrDefault(d.Index),
                    Snapshot = snapshots.Status(d.Index, copy),
                };
            }).ToList(),
            Cache = store.ListImages().Select(i => new CachedImageReport { ImageDigest = i.Digest.ToString(), Size = i.Size }).ToList(),
            FreeBytes = free,
            TotalBytes = total,
            Transfers = transfers.Snapshot(),
            AppliedGeneration = runner.AppliedGeneration,
            LastError = desired.LastRejection ?? runner.LastError,
        };
    }

    public async Task ReportAsync(Observation observation, CancellationToken cancellationToken)
    {
        var report = Build(observation, await gadget.ReadHostStateAsync(cancellationToken));
        var body = ProtocolSerializer.Serialize(report with { FreeBytes = 0 });
        var now = time.GetUtcNow();
        if (!_forceReport && _lastReportBody is not null && body.AsSpan().SequenceEqual(_lastReportBody) && now - _lastReportAt < options.Value.ReportInterval)
            return;
        if (!publisher.IsConnected)
            return;
        _forceReport = false;
        _lastReportBody = body;
        _lastReportAt = now;
        await publisher.PublishReportAsync(report with { ReportedAtUnixMs = now.ToUnixTimeMilliseconds() }, cancellationToken);
        foreach (var transfer in report.Transfers)
        {
            await publisher.PublishEventAsync(new AgentEvent
            {
                Kind = AgentEventKind.PullProgress,
                ImageDigest = transfer.ImageDigest,
                BytesDone = transfer.BytesDone,
                BytesTotal = transfer.BytesTotal,
            }, cancellationToken);
        }
    }
}
