using System.Text.Json;
using System.Threading.Channels;
using MsdFleet.Coordinator.Catalog;
using MsdFleet.Coordinator.Fleet;
using MsdFleet.Coordinator.Messaging;
using MsdFleet.Coordinator.State;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.Coordinator.Web;

/// <summary>
/// Turns what changes into live events in <see cref="LiveEventLog"/>: <c>agent</c> (the agent's whole view
/// after its status, report or desired state changed), <c>image</c> (a name committed or deleted),
/// <c>progress</c> (an agent's pull progress and attach/detach/failure events) and <c>reset</c> (events may
/// have been missed: reload).
/// <para>
/// Only the elected leader writes. Every replica hears every change — agents' MQTT messages through its own
/// subscription, other replicas' desired-state and catalog changes through the database's notifications —
/// so one writer gives one ordered stream without duplicates. Events that arise while no replica leads
/// (a killed leader's lease running out) are lost; a replica that becomes leader therefore first writes a
/// <c>reset</c> (unless the log is empty), and so does a leader whose write failed. Writes are batched: one
/// transaction per ≤ <see cref="MaxBatch"/> events.
/// </para>
/// </summary>
public sealed partial class LiveEventPublisher(LiveEventLog log, EventHub hub, LeaderLease leader, FleetRegistry registry, DesiredStateStore desired,
    AgentLabelStore labels, FleetView fleet, ImageCatalog catalog, CoordinatorMqttService mqtt, ILogger<LiveEventPublisher> logger) : BackgroundService
{
    public const int MaxBatch = 500;
    private const int MaxQueued = 50_000;
    private static readonly TimeSpan LeadershipCheck = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan PruneEvery = TimeSpan.FromMinutes(10);
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        Converters = { new System.Text.Json.Serialization.JsonStringEnumConverter() },
    };

    private readonly Channel<(string Type, string Payload)> _queue = Channel.CreateBounded<(string, string)>(
        new BoundedChannelOptions(MaxQueued) { SingleReader = true, FullMode = BoundedChannelFullMode.DropWrite });
    private volatile bool _overflowed;

    public override Task StartAsync(CancellationToken cancellationToken)
    {
        registry.Changed += OnAgentChanged;
        desired.Changed += OnAgentChanged;
        labels.Changed += OnAgentChanged;
        catalog.Changed += OnImageChanged;
        mqtt.AgentEventReceived += OnAgentEvent;
        return base.StartAsync(cancellationToken);
    }

    public override Task StopAsync(CancellationToken cancellationToken)
    {
        registry.Changed -= OnAgentChanged;
        desired.Changed -= OnAgentChanged;
        labels.Changed -= OnAgentChanged;
        catalog.Changed -= OnImageChanged;
        mqtt.AgentEventReceived -= OnAgentEvent;
        return base.StopAsync(cancellationToken);
    }

    /// <summary>An event from the leader's own work (rollouts); dropped on a replica that does not lead.</summary>
    public void Publish(string type, object data) => Enqueue(type, data);

    private void Enqueue(string type, object data)
    {
        if (!leader.IsLeader)
            return;
        if (!_queue.Writer.TryWrite((type, JsonSerializer.Serialize(data, Json))))
            _overflowed = true;
    }

    private void OnAgentChanged(string agentId) => Enqueue("agent", fleet.View(agentId));

    private void OnImageChanged(string name, string action) => Enqueue("image", new { name, action });

    private void OnAgentEvent(string agentId, AgentEvent e) => Enqueue("progress", new
    {
        agentId,
        kind = e.Kind.ToString(),
        image = e.ImageDigest,
        bytesDone = e.BytesDone,
        bytesTotal = e.BytesTotal,
        message = e.Message,
        at = DateTimeOffset.FromUnixTimeMilliseconds(e.AtUnixMs),
    });

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await leader.FirstRound.WaitAsync(stoppingToken);
        long writtenTerm = -1;
        var needReset = false;
        var lastPrune = DateTimeOffset.MinValue;
        var batch = new List<(string Type, string Payload)>(MaxBatch);
        while (!stoppingToken.IsCancellationRequested)
        {
            if (batch.Count == 0)
            {
                using var tick = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
                tick.CancelAfter(LeadershipCheck);
                try
                {
                    await _queue.Reader.WaitToReadAsync(tick.Token);
                }
                catch (OperationCanceledException) when (!stoppingToken.IsCancellationRequested)
                {
                }
                while (batch.Count < MaxBatch && _queue.Reader.TryRead(out var next))
                    batch.Add(next);
            }
            if (!leader.IsLeader)
            {
                // Another replica writes now; if this one leads again, it starts with a reset.
                batch.Clear();
                writtenTerm = -1;
                continue;
            }
            try
            {
                if (leader.Term != writtenTerm)
                {
                    // Newly elected: what happened between the last leader's end and now was not written.
                    needReset |= await log.LastAsync(stoppingToken) > 0;
                    writtenTerm = leader.Term;
                }
                if (_overflowed)
                {
                    _overflowed = false;
                    needReset = true;
                }
                if (needReset)
                    batch.Insert(0, ("reset", """{"reason":"events may have been missed"}"""));
                if (batch.Count > 0)
                {
                    await log.AppendAsync(batch, stoppingToken);
                    hub.Wake();
                }
                batch.Clear();
                needReset = false;
                if (DateTimeOffset.UtcNow - lastPrune > PruneEvery)
                {
                    lastPrune = DateTimeOffset.UtcNow;
                    await log.PruneAsync(LiveEventLog.Retained, stoppingToken);
                }
            }
            catch (Exception ex) when (StateDatabase.IsUnavailable(ex))
            {
                // Dropped, and said so to every client once the database answers again.
                Log.WriteFailed(logger, batch.Count, ex.Message);
                batch.Clear();
                needReset = true;
                await Task.Delay(TimeSpan.FromSeconds(1), stoppingToken);
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Writing {Count} live events failed ({Reason}); clients will be told to reload")]
        public static partial void WriteFailed(ILogger logger, int count, string reason);
    }
}
