using System.Buffers;
using System.Text;
using Microsoft.Extensions.Options;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;
using MsdFleet.Coordinator.Fleet;
using MsdFleet.Protocol;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Naming;
using MsdFleet.Protocol.Security;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.Coordinator.Messaging;

/// <summary>
/// The Coordinator's MQTT session. Keeps itself connected from a loop (never from the disconnected
/// event), feeds the <see cref="FleetRegistry"/> from agents' retained status and reports, and publishes
/// desired state retained. On every (re)connect it republishes all durable desired state, so a broker
/// that lost its retained messages is repaired without any agent noticing.
/// </summary>
public sealed partial class CoordinatorMqttService : BackgroundService, IDesiredStatePublisher
{
    private static readonly TimeSpan ReconnectDelay = TimeSpan.FromSeconds(1);
    private const int SweepEveryRounds = 5;
    private long _round;
    private readonly MqttOptions _options;
    private readonly TopicNames _topics;
    private readonly FleetRegistry _registry;
    private readonly DesiredStateStore _desired;
    private readonly EmbeddedBrokerService? _embedded;
    private readonly Auth.SigningKeyStore _signing;
    private readonly ILogger<CoordinatorMqttService> _logger;
    private readonly IMqttClient _client;
    private readonly Security.TlsCertificates _tls;
    private readonly IServiceProvider _services;
    private IMqttExtension[]? _extensions;
    private readonly Observability.CoordinatorMetrics _metrics;

    // Resolved on first use: extensions depend on this service to publish.
    private IMqttExtension[] Extensions => _extensions ??= _services.GetServices<IMqttExtension>().ToArray();
    private readonly TaskCompletionSource _firstConnect = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public CoordinatorMqttService(IOptions<MqttOptions> options, TopicNames topics, FleetRegistry registry, DesiredStateStore desired,
        Auth.SigningKeyStore signing, Security.TlsCertificates tls, Observability.CoordinatorMetrics metrics, IServiceProvider services, ILogger<CoordinatorMqttService> logger,
        EmbeddedBrokerService? embedded = null)
    {
        _metrics = metrics;
        _tls = tls;
        _signing = signing;
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Value;
        _topics = topics;
        _registry = registry;
        _desired = desired;
        _embedded = embedded; // registered only when the broker is embedded
        _services = services;
        _logger = logger;
        _client = new MqttClientFactory().CreateMqttClient();
        _client.ApplicationMessageReceivedAsync += e =>
        {
            Handle(e.ApplicationMessage.Topic, e.ApplicationMessage.Payload);
            return Task.CompletedTask;
        };
    }

    public bool IsConnected => _client.IsConnected;

    private Uri BrokerUri => _options.BrokerUriFor(_tls.Enabled);

    /// <summary>Completes once the first session is up (used by readiness and tests).</summary>
    public Task Connected => _firstConnect.Task;

    /// <summary>
    /// Signs and publishes the agent's newest stored desired state, retained, under its row lock (see
    /// <see cref="DesiredStateStore.PublishLatestAsync"/>: never an older generation after a newer one, from any
    /// replica). If the broker is down the state is already durable and goes out on reconnect.
    /// </summary>
    public async Task PublishDesiredAsync(string agentId, CancellationToken cancellationToken)
    {
        if (!_client.IsConnected)
            return;
        try
        {
            await _desired.PublishLatestAsync(agentId, state => PublishTimedAsync(agentId, state, cancellationToken), force: false, cancellationToken);
        }
        catch (Exception ex) when (ex is MQTTnet.Exceptions.MqttCommunicationException or InvalidOperationException)
        {
            Log.PublishFailed(_logger, agentId, ex);
        }
    }

    public async Task PublishDesiredManyAsync(IReadOnlyCollection<string> agentIds, CancellationToken cancellationToken)
    {
        if (!_client.IsConnected)
            return;
        try
        {
            await _desired.PublishLatestManyAsync(agentIds, async states =>
            {
                // Signing is CPU (ECDSA P-256): on every core; the QoS 1 publishes are in flight together, acknowledged in any order.
                var messages = new MqttApplicationMessage[states.Count];
                var key = await _signing.GetAsync(cancellationToken);
                var parameters = key.ExportParameters(includePrivateParameters: true);
                // One key object per worker: an ECDsa instance is not documented as safe to share across threads.
                Parallel.For(0, states.Count, () => System.Security.Cryptography.ECDsa.Create(parameters), (i, _, own) =>
                {
                    messages[i] = Message(states[i].AgentId!, states[i], own);
                    return own;
                }, own => own.Dispose());
                System.Security.Cryptography.CryptographicOperations.ZeroMemory(parameters.D);
                var started = System.Diagnostics.Stopwatch.GetTimestamp();
                await Task.WhenAll(messages.Select(m => _client.PublishAsync(m, cancellationToken)));
                _metrics.PublishDuration.Record(System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds / states.Count);
            }, cancellationToken);
        }
        catch (Exception ex) when (ex is MQTTnet.Exceptions.MqttCommunicationException or InvalidOperationException)
        {
            // Nothing was recorded as published: the sweep (every replica, every few seconds) or the reconnect sends them.
            Log.PublishFailed(_logger, $"{agentIds.Count} agents", ex);
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                if (!_client.IsConnected)
                    await ConnectAsync(stoppingToken);
                else if (++_round % SweepEveryRounds == 0)
                    await PublishUnpublishedAsync(stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex)
            {
                Log.ConnectFailed(_logger, BrokerUri, ex.Message);
            }
            try
            {
                await Task.Delay(ReconnectDelay, stoppingToken);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
        if (_client.IsConnected)
            await _client.DisconnectAsync(new MqttClientDisconnectOptionsBuilder().Build(), CancellationToken.None);
        _client.Dispose();
    }

    /// <summary>
    /// The transport's catch-up, every few seconds on every replica: a desired state that was stored but whose publish
    /// never happened — its replica stopped between commit and publish, or the broker dropped the session just then —
    /// goes out now. Without it such an agent would wait for the next reconnect of some replica. Idempotent: under the
    /// row lock, and only while that generation is still unpublished.
    /// </summary>
    private async Task PublishUnpublishedAsync(CancellationToken cancellationToken)
    {
        foreach (var agentId in await _desired.UnpublishedAgentIdsAsync(cancellationToken))
            await PublishDesiredAsync(agentId, cancellationToken);
    }

    /// <summary>Publishes a message for an extension (JSON for Home Assistant); dropped while disconnected.</summary>
    public async Task PublishAsync(string topic, byte[] payload, bool retain, CancellationToken cancellationToken)
    {
        if (!_client.IsConnected)
            return;
        try
        {
            await _client.PublishAsync(new MqttApplicationMessageBuilder().WithTopic(topic).WithPayload(payload).WithRetainFlag(retain)
                .WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build(), cancellationToken);
        }
        catch (Exception ex) when (ex is MQTTnet.Exceptions.MqttCommunicationException or InvalidOperationException)
        {
            Log.PublishFailed(_logger, topic, ex);
        }
    }

    private async Task ConnectAsync(CancellationToken cancellationToken)
    {
        var uri = BrokerUri;
        var builder = new MqttClientOptionsBuilder()
            .WithTcpServer(uri.IdnHost, uri.Port)
            .WithClientId($"msdfleet-coordinator-{Environment.MachineName}-{Environment.ProcessId}")
            .WithProtocolVersion(MqttProtocolVersion.V500)
            .WithCleanStart(true)
            .WithKeepAlivePeriod(TimeSpan.FromSeconds(15))
            .WithTimeout(TimeSpan.FromSeconds(10));
        foreach (var extension in Extensions)
        {
            if (extension.Will is { } will)
                builder.WithWillTopic(will.Topic).WithWillPayload(Encoding.UTF8.GetBytes(will.Payload)).WithWillRetain()
                    .WithWillQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce);
        }
        if (uri.Scheme == "mqtts")
        {
            // The embedded broker is reached through loopback: pin exactly its certificate. An external
            // broker must chain to Mqtt:CaCertificatePath, or to the system's roots.
            var trust = string.IsNullOrEmpty(_options.CaCertificatePath) ? TlsTrust.System : TlsTrust.FromPemFile(_options.CaCertificatePath);
            var own = _embedded is not null ? _tls.Server : null;
            builder.WithTlsOptions(o => o.UseTls().WithTargetHost(uri.IdnHost).WithCertificateValidationHandler(e => own is not null
                ? e.Certificate is not null && e.Certificate.GetRawCertData().AsSpan().SequenceEqual(own.RawData)
                : trust.Validate(e.Certificate, e.Chain, e.SslPolicyErrors)));
        }
        if (_embedded is not null)
            builder.WithCredentials(EmbeddedBrokerService.CoordinatorUser, _embedded.CoordinatorPassword);
        else if (!string.IsNullOrEmpty(_options.Username))
            builder.WithCredentials(_options.Username, _options.Password);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(15));
        var result = await _client.ConnectAsync(builder.Build(), timeout.Token);
        if (result.ResultCode != MqttClientConnectResultCode.Success)
        {
            Log.ConnectFailed(_logger, uri, result.ResultCode.ToString());
            return;
        }
        var subscription = new MqttClientSubscribeOptionsBuilder()
            .WithTopicFilter(_topics.AllStatus, MqttQualityOfServiceLevel.AtLeastOnce)
            .WithTopicFilter(_topics.AllReported, MqttQualityOfServiceLevel.AtLeastOnce)
            .WithTopicFilter(_topics.AllEvents, MqttQualityOfServiceLevel.AtMostOnce);
        foreach (var filter in Extensions.SelectMany(e => e.TopicFilters))
            subscription.WithTopicFilter(filter, MqttQualityOfServiceLevel.AtLeastOnce);
        await _client.SubscribeAsync(subscription.Build(), timeout.Token);
        // Republished from the database, each under its row lock, so a reconnect never puts back an older generation.
        // Not within the connect's 15 s (a large fleet takes longer): each publish has its own bound, and a republish
        // that fails part-way ends the session, so the next round starts it over — a broker that lost its retained
        // messages must get every agent's state back, not only the first ones.
        IReadOnlyList<string> agents;
        try
        {
            agents = await _desired.AgentIdsAsync(cancellationToken);
            foreach (var agentId in agents)
            {
                using var one = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                one.CancelAfter(TimeSpan.FromSeconds(15));
                await _desired.PublishLatestAsync(agentId, state => PublishTimedAsync(agentId, state, one.Token), force: true, one.Token);
            }
            foreach (var extension in Extensions)
                await extension.OnConnectedAsync(cancellationToken);
        }
        catch (Exception) when (!cancellationToken.IsCancellationRequested)
        {
            await _client.DisconnectAsync(new MqttClientDisconnectOptionsBuilder().Build(), CancellationToken.None);
            throw;
        }
        Log.Connected(_logger, uri, agents.Count);
        _firstConnect.TrySetResult();
    }

    private async Task PublishTimedAsync(string agentId, DesiredState state, CancellationToken cancellationToken)
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        await _client.PublishAsync(await SignedMessageAsync(agentId, state, cancellationToken), cancellationToken);
        _metrics.PublishDuration.Record(System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds);
    }

    private async Task<MqttApplicationMessage> SignedMessageAsync(string agentId, DesiredState state, CancellationToken cancellationToken) =>
        Message(agentId, state, await _signing.GetAsync(cancellationToken));

    private MqttApplicationMessage Message(string agentId, DesiredState state, System.Security.Cryptography.ECDsa key)
    {
        var bytes = Protocol.Signing.DesiredStateSigning.Sign(state with { AgentId = agentId }, key);
        return new MqttApplicationMessageBuilder()
            .WithTopic(_topics.Desired(agentId))
            .WithPayload(bytes)
            .WithRetainFlag()
            .WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce)
            .Build();
    }

    private void Handle(string topic, ReadOnlySequence<byte> payload)
    {
        if (!_topics.TryParseAgentTopic(topic, out var agentId, out var leaf))
        {
            foreach (var extension in Extensions)
            {
                if (extension.TopicFilters.Any(f => MqttTopicFilterComparer.Compare(topic, f) == MqttTopicFilterCompareResult.IsMatch))
                    extension.OnMessage(topic, payload);
            }
            return;
        }
        switch (leaf)
        {
            case "status":
                var text = Encoding.UTF8.GetString(payload);
                if (text is AgentStatus.Online or AgentStatus.Offline)
                    _registry.SetStatus(agentId, text == AgentStatus.Online);
                else if (payload.Length > 0)
                    Log.Dropped(_logger, topic, "status is neither 'online' nor 'offline'");
                break;
            case "reported":
                if (payload.Length == 0)
                    break; // retained message cleared
                try
                {
                    _registry.SetReport(agentId, ProtocolSerializer.Deserialize<AgentReport>(payload.ToArray()));
                }
                catch (ProtocolFormatException ex)
                {
                    Log.Dropped(_logger, topic, ex.Message);
                }
                break;
            case "events":
                try
                {
                    AgentEventReceived?.Invoke(agentId, ProtocolSerializer.Deserialize<AgentEvent>(payload.ToArray()));
                }
                catch (ProtocolFormatException ex)
                {
                    Log.Dropped(_logger, topic, ex.Message);
                }
                break;
        }
    }

    /// <summary>Raised for each event an agent publishes (pull progress, attach, errors).</summary>
    public event Action<string, AgentEvent>? AgentEventReceived;

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Connected to MQTT broker {Broker}; republished {Count} desired states")]
        public static partial void Connected(ILogger logger, Uri broker, int count);

        [LoggerMessage(2, LogLevel.Warning, "Cannot connect to MQTT broker {Broker}: {Reason}; retrying")]
        public static partial void ConnectFailed(ILogger logger, Uri broker, string reason);

        [LoggerMessage(3, LogLevel.Warning, "Dropped message on {Topic}: {Reason}")]
        public static partial void Dropped(ILogger logger, string topic, string reason);

        [LoggerMessage(4, LogLevel.Warning, "Publishing desired state for {AgentId} failed; it goes out on reconnect")]
        public static partial void PublishFailed(ILogger logger, string agentId, Exception exception);
    }
}
