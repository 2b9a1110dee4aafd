using System.Diagnostics;
using System.Text;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;
using MsdFleet.FleetSimulator;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.FleetBench;

/// <summary>
/// The reference the rollout is compared with: the same broker and the same N simulated sessions, no Coordinator in
/// the path. One client logged in as the Coordinator's broker user (only it may write desired-state topics) publishes a
/// ping (<see cref="SimulatedAgent.PingPrefix"/>) to each agent's desired topic, QoS 1 like a desired state, as many in
/// flight as the broker's Receive Maximum allows; each agent answers on its events topic; the time is until every
/// agent's answer has arrived.
/// </summary>
public sealed class RawRoundTrip : IAsyncDisposable
{
    private readonly IMqttClient _client = new MqttClientFactory().CreateMqttClient();
    private readonly TopicNames _topics;
    private readonly Dictionary<string, int> _index;
    private bool[] _answered = [];
    private int _count;
    private string _marker = "";
    private TaskCompletionSource _all = new();
    private int _window;

    private RawRoundTrip(TopicNames topics, IReadOnlyList<string> agentIds)
    {
        _topics = topics;
        _index = agentIds.Select((id, i) => (id, i)).ToDictionary(x => x.id, x => x.i, StringComparer.Ordinal);
    }

    public static async Task<RawRoundTrip> ConnectAsync(Uri broker, string user, string password, TopicNames topics, IReadOnlyList<string> agentIds,
        CancellationToken ct)
    {
        var probe = new RawRoundTrip(topics, agentIds);
        var result = await probe._client.ConnectAsync(new MqttClientOptionsBuilder().WithTcpServer(broker.Host, broker.Port)
            .WithClientId("fleetbench-probe").WithCredentials(user, password).WithProtocolVersion(MqttProtocolVersion.V500).WithCleanStart().Build(), ct);
        if (result.ResultCode != MqttClientConnectResultCode.Success)
            throw new BenchException($"the probe could not log in to {broker} as '{user}': {result.ResultCode}");
        probe._window = result.ReceiveMaximum is null or 0 ? 65_535 : result.ReceiveMaximum.Value;
        probe._client.ApplicationMessageReceivedAsync += e =>
        {
            probe.OnAnswer(e.ApplicationMessage.Topic, System.Buffers.BuffersExtensions.ToArray(e.ApplicationMessage.Payload));
            return Task.CompletedTask;
        };
        var subscribed = await probe._client.SubscribeAsync(new MqttClientSubscribeOptionsBuilder()
            .WithTopicFilter(topics.Prefix + "/agents/+/events", MqttQualityOfServiceLevel.AtLeastOnce).Build(), ct);
        if (subscribed.Items.Single().ResultCode > MqttClientSubscribeResultCode.GrantedQoS2)
            throw new BenchException($"the broker refused the probe's subscription to the agents' events ({subscribed.Items.Single().ResultCode})");
        return probe;
    }

    /// <summary>In-flight publishes the broker allows this client (its CONNACK's Receive Maximum).</summary>
    public int Window => _window;

    private void OnAnswer(string topic, byte[] payload)
    {
        var parts = topic.Split('/');
        if (parts.Length < 2 || !_index.TryGetValue(parts[^2], out var i))
            return;
        if (!Encoding.UTF8.GetString(payload).StartsWith(_marker, StringComparison.Ordinal))
            return;
        if (!_answered[i])
        {
            _answered[i] = true;
            if (Interlocked.Increment(ref _count) == _answered.Length)
                _all.TrySetResult();
        }
    }

    /// <summary>One round: the time until all answered, or null (with how many did) when <paramref name="timeout"/> passed first.</summary>
    public async Task<(TimeSpan? Elapsed, int Answered)> RoundAsync(int round, TimeSpan timeout, CancellationToken ct)
    {
        _marker = Encoding.UTF8.GetString(SimulatedAgent.PingPrefix) + round.ToString(System.Globalization.CultureInfo.InvariantCulture) + ":";
        _answered = new bool[_index.Count];
        _count = 0;
        _all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var window = new SemaphoreSlim(_window);
        var clock = Stopwatch.StartNew();
        var sends = _index.Keys.Select(async id =>
        {
            await window.WaitAsync(ct);
            try
            {
                await _client.PublishAsync(new MqttApplicationMessageBuilder().WithTopic(_topics.Desired(id)).WithPayload(Encoding.UTF8.GetBytes(_marker + id))
                    .WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build(), ct);
            }
            finally
            {
                window.Release();
            }
        }).ToList();
        await Task.WhenAll(sends);
        var done = await Task.WhenAny(_all.Task, Task.Delay(timeout, ct)) == _all.Task;
        return (done ? clock.Elapsed : null, Volatile.Read(ref _count));
    }

    public async ValueTask DisposeAsync()
    {
        if (_client.IsConnected)
            await _client.DisconnectAsync();
        _client.Dispose();
    }
}
