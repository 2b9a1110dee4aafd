using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Naming;
using MsdFleet.Protocol.Serialization;
using MsdFleet.Protocol.Signing;

namespace MsdFleet.FleetSimulator;

/// <summary>
/// One simulated agent: its own MQTT session (client id = user = agent id, its own secret, so the broker's
/// ACL applies to it as to a Pi), a last will, the signed desired state verified against the pinned key and
/// refused when older than one already applied, and a retained report like the real agent's. Images in its
/// cache "attach" at once; others are "pulled" in <see cref="PullTime"/>. It can be told to fail its next
/// assignments, or to drop off the network (no clean disconnect: the broker publishes its will).
/// </summary>
public sealed class SimulatedAgent : IAsyncDisposable
{
    /// <summary>Payload prefix of the raw round-trip probe: answered on the events topic, never taken for a desired state.</summary>
    public static readonly byte[] PingPrefix = "msdfleet-sim-ping:"u8.ToArray();

    private readonly Uri _broker;
    private readonly TopicNames _topics;
    private readonly ECDsa _trusted;
    private readonly Lock _lock = new();
    private readonly HashSet<string> _cache = new(StringComparer.Ordinal);
    private IMqttClient? _client;
    private long _applied;
    private DesiredState? _desired;
    private string? _failWith;
    private readonly Dictionary<string, TransferReport> _transfers = new(StringComparer.Ordinal);
    private readonly System.Threading.Channels.Channel<(string Topic, byte[] Payload)> _inbox =
        System.Threading.Channels.Channel.CreateUnbounded<(string, byte[])>(new System.Threading.Channels.UnboundedChannelOptions { SingleReader = true });
    private Task? _loop;

    public SimulatedAgent(string id, string secret, Uri broker, TopicNames topics, ECDsa trusted, IReadOnlyDictionary<string, string>? labels = null)
    {
        Id = id;
        Secret = secret;
        _broker = broker;
        _topics = topics;
        _trusted = trusted;
        Labels = labels ?? new Dictionary<string, string>();
    }

    public string Id { get; }
    public string Secret { get; }
    public IReadOnlyDictionary<string, string> Labels { get; }

    /// <summary>How long a pull of an image not in the cache takes (zero: at once).</summary>
    public TimeSpan PullTime { get; set; }

    /// <summary>Desired states refused (bad signature, wrong agent, older generation), with the reason.</summary>
    public List<string> Rejected { get; } = [];

    /// <summary>Every generation this agent received and applied, in order (to check none went backwards).</summary>
    public List<long> AppliedGenerations { get; } = [];

    public bool IsConnected => _client?.IsConnected == true;

    public long AppliedGeneration => Interlocked.Read(ref _applied);

    /// <summary>Raised after each report it published (from the MQTT thread).</summary>
    public event Action<SimulatedAgent, AgentReport>? Reported;

    public void Cache(string digest)
    {
        lock (_lock)
            _cache.Add(digest);
    }

    /// <summary>Assignments from now on fail with <paramref name="error"/> (null: succeed again).</summary>
    public void FailWith(string? error)
    {
        lock (_lock)
            _failWith = error;
    }

    /// <summary>Reconnect (every second) when the broker drops the session, as the real agent does; off after <see cref="Vanish"/>.</summary>
    public bool AutoReconnect { get; set; } = true;

    public async Task ConnectAsync(CancellationToken cancellationToken)
    {
        AutoReconnect = true;
        _client?.Dispose();
        _client = new MqttClientFactory().CreateMqttClient();
        var mine = _client;
        _client.DisconnectedAsync += async e =>
        {
            while (AutoReconnect && ReferenceEquals(_client, mine) && !mine.IsConnected)
            {
                await Task.Delay(TimeSpan.FromSeconds(1));
                try
                {
                    if (AutoReconnect && ReferenceEquals(_client, mine))
                        await ConnectSessionAsync(mine, CancellationToken.None);
                    return;
                }
                catch (Exception ex) when (ex is MQTTnet.Exceptions.MqttCommunicationException or InvalidOperationException or OperationCanceledException)
                {
                }
            }
        };
        // MQTTnet handles a client's packets one at a time: a handler that awaited its own QoS 1 publish would wait
        // for an acknowledgement that cannot be read. So messages are handed to this agent's own loop, as the real agent does.
        _client.ApplicationMessageReceivedAsync += e =>
        {
            _inbox.Writer.TryWrite((e.ApplicationMessage.Topic, e.ApplicationMessage.Payload.ToArray()));
            return Task.CompletedTask;
        };
        _loop ??= Task.Run(async () =>
        {
            await foreach (var (topic, payload) in _inbox.Reader.ReadAllAsync())
            {
                try
                {
                    if (topic.Length == 0)
                        await ReportAsync(CancellationToken.None); // RequestReport: in order with the desired states
                    else
                        await OnMessageAsync(topic, payload);
                }
                catch (Exception ex) when (ex is MQTTnet.Exceptions.MqttCommunicationException or OperationCanceledException)
                {
                    // Offline meanwhile: the retained desired state comes again on the next session.
                }
            }
        }, CancellationToken.None);
        await ConnectSessionAsync(_client, cancellationToken);
    }

    private async Task ConnectSessionAsync(IMqttClient client, CancellationToken cancellationToken)
    {
        var options = new MqttClientOptionsBuilder()
            .WithTcpServer(_broker.Host, _broker.Port)
            .WithClientId(Id)
            .WithCredentials(Id, Secret)
            .WithProtocolVersion(MqttProtocolVersion.V500)
            .WithCleanStart(false)
            .WithSessionExpiryInterval(3600)
            .WithKeepAlivePeriod(TimeSpan.FromSeconds(15))
            .WithWillTopic(_topics.Status(Id)).WithWillPayload(Encoding.UTF8.GetBytes(AgentStatus.Offline)).WithWillRetain()
            .WithWillQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce)
            .Build();
        var result = await client.ConnectAsync(options, cancellationToken);
        if (result.ResultCode != MqttClientConnectResultCode.Success)
            throw new InvalidOperationException($"{Id}: the broker refused the session ({result.ResultCode} {result.ReasonString})");
        await PublishAsync(_topics.Status(Id), Encoding.UTF8.GetBytes(AgentStatus.Online), retain: true, cancellationToken);
        var subscribed = await client.SubscribeAsync(new MqttClientSubscribeOptionsBuilder()
            .WithTopicFilter(_topics.Desired(Id), MqttQualityOfServiceLevel.AtLeastOnce).Build(), cancellationToken);
        if (subscribed.Items.Single().ResultCode > MqttClientSubscribeResultCode.GrantedQoS2)
            throw new InvalidOperationException($"{Id}: the broker refused the desired-state subscription ({subscribed.Items.Single().ResultCode})");
        await ReportAsync(cancellationToken);
    }

    /// <summary>
    /// Publishes the report again, as the real agent does every <c>Agent:ReportInterval</c> (30 s). It goes through
    /// this agent's own loop, so it never overtakes the report of a desired state applied just before.
    /// </summary>
    public void RequestReport() => _inbox.Writer.TryWrite((string.Empty, []));

    /// <summary>An MQTT PINGREQ/PINGRESP through this agent's session: the broker's own round trip, no application in it.</summary>
    public async Task PingBrokerAsync(CancellationToken cancellationToken)
    {
        if (_client is not { IsConnected: true } client)
            throw new InvalidOperationException($"{Id} is not connected");
        await client.PingAsync(cancellationToken);
    }

    /// <summary>Drops off the network without a clean disconnect, as a Pi that loses power: the broker sends its will.</summary>
    public void Vanish()
    {
        AutoReconnect = false;
        var client = _client;
        _client = null;
        client?.Dispose();
    }

    private async Task OnMessageAsync(string topic, byte[] payload)
    {
        if (topic != _topics.Desired(Id) || payload.Length == 0)
            return;
        if (payload.AsSpan().StartsWith(PingPrefix))
        {
            await PublishAsync(_topics.Events(Id), payload, retain: false, CancellationToken.None);
            return;
        }
        DesiredState state;
        try
        {
            state = DesiredStateSigning.Verify(payload, _trusted, Id);
        }
        catch (DesiredStateRejectedException ex)
        {
            lock (_lock)
                Rejected.Add(ex.Message);
            return;
        }
        lock (_lock)
        {
            if (state.Generation < _applied)
            {
                Rejected.Add($"generation {state.Generation} is older than the applied {_applied}");
                return;
            }
            _desired = state;
        }
        var missing = state.Drives.Where(d => d.ImageDigest is not null).Select(d => d.ImageDigest!).Concat(state.Prefetch?.Select(p => p.ImageDigest) ?? [])
            .Where(d => !IsCached(d)).Distinct().ToList();
        if (missing.Count > 0 && PullTime > TimeSpan.Zero && _failWith is null)
        {
            lock (_lock)
            {
                foreach (var digest in missing)
                    _transfers[digest] = new TransferReport { ImageDigest = digest, BytesTotal = 1, State = TransferState.Pulling };
            }
            await ReportAsync(CancellationToken.None);
            await Task.Delay(PullTime);
        }
        lock (_lock)
        {
            if (_failWith is null)
            {
                foreach (var digest in missing)
                {
                    _cache.Add(digest);
                    _transfers.Remove(digest);
                }
            }
            Interlocked.Exchange(ref _applied, state.Generation);
            AppliedGenerations.Add(state.Generation);
        }
        await ReportAsync(CancellationToken.None);
    }

    private bool IsCached(string digest)
    {
        lock (_lock)
            return _cache.Contains(digest);
    }

    private async Task ReportAsync(CancellationToken cancellationToken)
    {
        AgentReport report;
        lock (_lock)
        {
            var error = _failWith;
            report = new AgentReport
            {
                AgentVersion = "simulator",
                Labels = Labels,
                AppliedGeneration = _applied,
                LastError = _desired is not null ? error : null,
                Drives = Enumerable.Range(0, 2).Select(i =>
                {
                    var drive = _desired?.Drives.FirstOrDefault(d => d.Index == i);
                    var present = drive?.ImageDigest is { } digest && _cache.Contains(digest) && error is null;
                    return new DriveReport
                    {
                        Index = i,
                        ImageDigest = present ? drive!.ImageDigest : null,
                        Mode = present ? drive!.Mode : DriveMode.None,
                        ReadOnly = drive?.ReadOnly ?? true,
                        Connected = present && drive!.Connected,
                        HostState = present && drive!.Connected ? "attached" : "detached",
                        Error = drive?.ImageDigest is not null && error is not null ? error : null,
                        Function = "mass_storage.usb0",
                        Lun = i,
                        CdromCapable = true,
                        WritableCapable = true,
                    };
                }).ToList(),
                Cache = _cache.Select(d => new CachedImageReport { ImageDigest = d, Size = 1 }).ToList(),
                Transfers = _transfers.Values.ToList(),
                FreeBytes = 1L << 40,
                TotalBytes = 1L << 41,
                ReportedAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
            };
        }
        await PublishAsync(_topics.Reported(Id), ProtocolSerializer.Serialize(report), retain: true, cancellationToken);
        Reported?.Invoke(this, report);
    }

    private async Task PublishAsync(string topic, byte[] payload, bool retain, CancellationToken cancellationToken)
    {
        if (_client is not { IsConnected: true } client)
            return;
        // Bounded: a session dropped mid-publish (Vanish, a broker restart) must not hold this agent's loop forever;
        // what was lost is reported again when the next session starts.
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(10));
        try
        {
            await client.PublishAsync(new MqttApplicationMessageBuilder().WithTopic(topic).WithPayload(payload).WithRetainFlag(retain)
                .WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build(), timeout.Token);
        }
        catch (Exception ex) when (ex is MQTTnet.Exceptions.MqttCommunicationException or ObjectDisposedException
            || (ex is OperationCanceledException && !cancellationToken.IsCancellationRequested))
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        _inbox.Writer.TryComplete();
        if (_client is { IsConnected: true } client)
        {
            try
            {
                await PublishAsync(_topics.Status(Id), Encoding.UTF8.GetBytes(AgentStatus.Offline), retain: true, CancellationToken.None);
                await client.DisconnectAsync();
            }
            catch (MQTTnet.Exceptions.MqttCommunicationException)
            {
            }
        }
        _client?.Dispose();
    }
}
