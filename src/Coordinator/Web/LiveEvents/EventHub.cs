using System.Text;
using System.Threading.Channels;
using MsdFleet.Coordinator.State;

namespace MsdFleet.Coordinator.Web;

/// <summary>
/// Hands the live events of <see cref="LiveEventLog"/> to this replica's open streams. Events are numbered
/// by the database (one sequence for all replicas; written by the leader, see <see cref="LiveEventPublisher"/>),
/// so a client that reconnects — to this replica or another, before or after a restart — with
/// <c>Last-Event-ID</c> gets exactly what it missed, or a <c>reset</c> event telling it to reload when that is
/// no longer held.
/// <para>
/// Tailing: this service reads the log after the last number it delivered whenever it is woken — by the
/// local writer's commit, by the <c>msdfleet_events</c> notification of another replica's, after the
/// listener reconnected — and every <see cref="PollEvery"/> as a safety net. Delivery happens under
/// <see cref="_lock"/> in sequence order, and a subscription registers under the same lock, so its backlog
/// (read from the database, up to the number it registered at) and its live events (above it) neither
/// overlap nor leave a gap.
/// </para>
/// </summary>
public sealed partial class EventHub(LiveEventLog log, ILogger<EventHub> logger, StateNotifications? notifications = null) : BackgroundService
{
    /// <summary>The most a reconnecting client is sent as its backlog; further behind, it is told to reload.</summary>
    public const int MaxBacklog = 4096;
    public static readonly TimeSpan PollEvery = TimeSpan.FromSeconds(2);
    private const int ReadBatch = 1000;

    private readonly Lock _lock = new();
    private readonly List<Channel<HubEvent>> _subscribers = [];
    private readonly SemaphoreSlim _catchUp = new(1, 1);
    private readonly WakeSignal _wake = new();
    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _sequence;

    /// <summary>Open streams (for tests and metrics).</summary>
    public int SubscriberCount
    {
        get
        {
            lock (_lock)
                return _subscribers.Count;
        }
    }

    /// <summary>The newest number delivered here.</summary>
    public long Sequence => Interlocked.Read(ref _sequence);

    /// <summary>Asks the tailer to read the log now (new events were committed).</summary>
    public void Wake() => _wake.Wake();

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (notifications is not null)
        {
            notifications.Received += (channel, _) =>
            {
                if (channel == StateNotifications.EventsChannel)
                    Wake();
            };
            notifications.Resynchronize += Wake;
        }
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                // Starts at the newest event: a fresh replica does not replay history to open streams.
                Interlocked.Exchange(ref _sequence, await log.LastAsync(stoppingToken));
                _started.TrySetResult();
                break;
            }
            catch (Exception ex) when (StateDatabase.IsUnavailable(ex) && !stoppingToken.IsCancellationRequested)
            {
                Log.TailFailed(logger, ex.Message);
                await Task.Delay(TimeSpan.FromSeconds(1), stoppingToken);
            }
        }
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await CatchUpAsync(stoppingToken);
            }
            catch (Exception ex) when (StateDatabase.IsUnavailable(ex))
            {
                Log.TailFailed(logger, ex.Message);
            }
            await _wake.WaitAsync(PollEvery, stoppingToken);
        }
    }

    /// <summary>Reads and delivers everything committed after the last number delivered here.</summary>
    public async Task CatchUpAsync(CancellationToken cancellationToken)
    {
        await _catchUp.WaitAsync(cancellationToken);
        try
        {
            while (true)
            {
                var batch = await log.ReadAfterAsync(Sequence, ReadBatch, cancellationToken);
                if (batch.Count == 0)
                    return;
                Deliver(batch);
                if (batch.Count < ReadBatch)
                    return;
            }
        }
        finally
        {
            _catchUp.Release();
        }
    }

    private void Deliver(IReadOnlyList<LiveEventLog.Stored> batch)
    {
        lock (_lock)
        {
            foreach (var stored in batch)
            {
                if (stored.Seq <= _sequence)
                    continue;
                var e = new HubEvent(stored.Seq, stored.Type, stored.Payload);
                Interlocked.Exchange(ref _sequence, stored.Seq);
                for (var i = _subscribers.Count - 1; i >= 0; i--)
                {
                    // A subscriber that cannot keep up is cut off; it reconnects with Last-Event-ID.
                    if (!_subscribers[i].Writer.TryWrite(e))
                    {
                        _subscribers[i].Writer.TryComplete();
                        _subscribers.RemoveAt(i);
                    }
                }
            }
        }
    }

    /// <summary>
    /// Events after <paramref name="lastSeen"/> (null: from now on); <c>Reset</c> when some are no longer held
    /// or the position is one the log never reached.
    /// </summary>
    public async Task<Subscription> SubscribeAsync(long? lastSeen, CancellationToken cancellationToken)
    {
        await _started.Task.WaitAsync(cancellationToken);
        // A client coming from a replica that is ahead of this one by a few milliseconds.
        if (lastSeen > Sequence)
            await CatchUpAsync(cancellationToken);
        var channel = Channel.CreateBounded<HubEvent>(new BoundedChannelOptions(1024) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
        long at;
        lock (_lock)
        {
            at = _sequence;
            _subscribers.Add(channel);
        }
        var subscription = new Subscription(this, channel, at);
        try
        {
            if (lastSeen is { } seen && seen != at)
            {
                if (seen > at)
                {
                    subscription.Reset = true;
                }
                else
                {
                    var backlog = at - seen > MaxBacklog ? [] : await log.ReadAfterAsync(seen, (int)(at - seen), cancellationToken);
                    // Complete only if it starts right after what the client saw (nothing pruned) and reaches `at`.
                    if (backlog.Count == at - seen && backlog[0].Seq == seen + 1)
                        subscription.Backlog = backlog.Select(s => new HubEvent(s.Seq, s.Type, s.Payload)).ToList();
                    else
                        subscription.Reset = true;
                }
            }
        }
        catch
        {
            subscription.Dispose();
            throw;
        }
        return subscription;
    }

    private void Unsubscribe(Channel<HubEvent> channel)
    {
        lock (_lock)
            _subscribers.Remove(channel);
    }

    public sealed record HubEvent(long Sequence, string Type, string Json)
    {
        public string ToSse() => new StringBuilder().Append("id: ").Append(Sequence).Append('\n')
            .Append("event: ").Append(Type).Append('\n')
            .Append("data: ").Append(Json).Append("\n\n").ToString();
    }

    public sealed class Subscription(EventHub hub, Channel<HubEvent> channel, long sequence) : IDisposable
    {
        public IReadOnlyList<HubEvent> Backlog { get; internal set; } = [];
        public bool Reset { get; internal set; }

        /// <summary>The sequence number the subscription started at; live events are above it.</summary>
        public long Sequence { get; } = sequence;

        public ChannelReader<HubEvent> Reader => channel.Reader;

        public void Dispose() => hub.Unsubscribe(channel);
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Reading live events failed ({Reason}); retrying")]
        public static partial void TailFailed(ILogger logger, string reason);
    }
}
