using System.Text;
using System.Text.Json;
using System.Threading.Channels;

namespace MsdFleet.Coordinator.Web;

/// <summary>
/// Live events for the web UI, msdctl watch and scripts, with sequence numbers. The last
/// <see cref="Capacity"/> events are kept, so a client that reconnects with <c>Last-Event-ID</c> gets
/// exactly what it missed, or — if that is no longer held — a <c>reset</c> event telling it to reload.
/// Events are views (the agent as <c>GET /api/v1/agents/{id}</c> shows it), never secrets.
/// </summary>
public sealed class EventHub
{
    public const int Capacity = 4096;
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        Converters = { new System.Text.Json.Serialization.JsonStringEnumConverter() },
    };
    private readonly Lock _lock = new();
    private readonly LinkedList<HubEvent> _recent = new();
    private readonly List<Channel<HubEvent>> _subscribers = [];
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

    public void Publish(string type, object data)
    {
        var payload = JsonSerializer.Serialize(data, Json);
        lock (_lock)
        {
            var e = new HubEvent(++_sequence, type, payload);
            _recent.AddLast(e);
            if (_recent.Count > Capacity)
                _recent.RemoveFirst();
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

    /// <summary>Events after <paramref name="lastSeen"/> (null: from now on); <c>Reset</c> when some are no longer held.</summary>
    public Subscription Subscribe(long? lastSeen)
    {
        var channel = Channel.CreateBounded<HubEvent>(new BoundedChannelOptions(1024) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
        lock (_lock)
        {
            var reset = false;
            var backlog = new List<HubEvent>();
            if (lastSeen is { } seen && seen < _sequence)
            {
                var oldest = _recent.First?.Value.Sequence ?? _sequence + 1;
                if (seen + 1 < oldest || seen > _sequence)
                    reset = true;
                else
                    backlog.AddRange(_recent.Where(e => e.Sequence > seen));
            }
            else if (lastSeen is { } ahead && ahead > _sequence)
            {
                reset = true; // from before a Coordinator restart
            }
            _subscribers.Add(channel);
            return new Subscription(this, channel, backlog, reset, _sequence);
        }
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

    public sealed class Subscription(EventHub hub, Channel<HubEvent> channel, IReadOnlyList<HubEvent> backlog, bool reset, long sequence) : IDisposable
    {
        public IReadOnlyList<HubEvent> Backlog { get; } = backlog;
        public bool Reset { get; } = reset;

        /// <summary>The hub's sequence number when subscribing.</summary>
        public long Sequence { get; } = sequence;

        public ChannelReader<HubEvent> Reader => channel.Reader;

        public void Dispose() => hub.Unsubscribe(channel);
    }
}
