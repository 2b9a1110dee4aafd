using System.Buffers;
using System.Text;
using System.Threading.Channels;
using Microsoft.Extensions.Options;
using MQTTnet;
using MsdFleet.Protocol.Security;
using MQTTnet.Formatter;
using MQTTnet.Protocol;
using MsdFleet.EdgeAgent.Reconciliation;
using MsdFleet.Protocol;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Naming;
using MsdFleet.Protocol.Serialization;
using MsdFleet.Protocol.Signing;

namespace MsdFleet.EdgeAgent.Mqtt;

/// <summary>
/// The agent's MQTT session: connects from a loop (never from the disconnected event), leaves a
/// retained <c>offline</c> last will, announces <c>online</c>, subscribes to its own desired state and
/// hands each message through a bounded channel to validation, so a slow disk never stalls the
/// client and a malformed payload is logged and dropped without harming the session.
/// </summary>
public sealed partial class AgentMqttService : BackgroundService
{
    private readonly AgentMqttOptions _mqtt;
    private readonly AgentOptions _agent;
    private readonly TopicNames _topics;
    private readonly DesiredStateHolder _desired;
    private readonly CoordinatorKey _coordinatorKey;
    private readonly ILogger<AgentMqttService> _logger;
    private readonly IMqttClient _client;
    private readonly TlsTrust _trust;
    private readonly Channel<byte[]> _incoming = Channel.CreateBounded<byte[]>(new BoundedChannelOptions(8) { FullMode = BoundedChannelFullMode.DropOldest });

    public AgentMqttService(IOptions<AgentMqttOptions> mqtt, IOptions<AgentOptions> agent, TopicNames topics, DesiredStateHolder desired,
        CoordinatorKey coordinatorKey, TlsTrust trust, ILogger<AgentMqttService> logger)
    {
        _trust = trust;
        _coordinatorKey = coordinatorKey;
        ArgumentNullException.ThrowIfNull(mqtt);
        ArgumentNullException.ThrowIfNull(agent);
        _mqtt = mqtt.Value;
        _agent = agent.Value;
        _topics = topics;
        _desired = desired;
        _logger = logger;
        _client = new MqttClientFactory().CreateMqttClient();
        _client.ApplicationMessageReceivedAsync += e =>
        {
            if (e.ApplicationMessage.Topic == _topics.Desired(_agent.Id))
                _incoming.Writer.TryWrite(e.ApplicationMessage.Payload.ToArray());
            return Task.CompletedTask;
        };
    }

    /// <summary>Raised after each successful (re)connect, so the reporter republishes at once.</summary>
    public event Action? Connected;

    public bool IsConnected => _client.IsConnected;

    /// <summary>
    /// Publishes at QoS 1. <paramref name="expiry"/> sets MQTT v5 message expiry: events (progress, errors)
    /// describe a moment and must not reach a subscriber that reconnects much later as if they were news;
    /// retained state (status, reported) never expires, it is the current truth.
    /// </summary>
    public async Task PublishAsync(string topic, byte[] payload, bool retain, CancellationToken cancellationToken, TimeSpan? expiry = null)
    {
        if (!_client.IsConnected)
            return;
        try
        {
            var message = new MqttApplicationMessageBuilder()
                .WithTopic(topic).WithPayload(payload).WithRetainFlag(retain)
                .WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce);
            if (expiry is { } e)
                message.WithMessageExpiryInterval((uint)Math.Max(1, e.TotalSeconds));
            await _client.PublishAsync(message.Build(), cancellationToken);
        }
        catch (Exception ex) when (ex is MQTTnet.Exceptions.MqttCommunicationException or InvalidOperationException)
        {
            Log.PublishFailed(_logger, topic, ex.Message);
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var consumer = ConsumeAsync(stoppingToken);
        var attempt = 0;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                if (!_client.IsConnected)
                {
                    attempt = await ConnectAsync(stoppingToken) ? 0 : attempt + 1;
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex)
            {
                attempt++;
                Log.ConnectFailed(_logger, _mqtt.Broker!, ex.Message);
            }
            // Back off with jitter so a restarted broker is not hit by the whole fleet at once.
            var delay = attempt == 0 ? TimeSpan.FromSeconds(1)
                : TimeSpan.FromMilliseconds(Math.Min(30_000, 500 * Math.Pow(2, Math.Min(attempt, 6))) * (0.5 + Random.Shared.NextDouble() / 2));
            try
            {
                await Task.Delay(delay, stoppingToken);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
        _incoming.Writer.TryComplete();
        await consumer;
        if (_client.IsConnected)
        {
            // A clean shutdown still tells the fleet this agent is gone.
            await PublishAsync(_topics.Status(_agent.Id), Encoding.UTF8.GetBytes(AgentStatus.Offline), true, CancellationToken.None);
            await _client.DisconnectAsync(new MqttClientDisconnectOptionsBuilder().Build(), CancellationToken.None);
        }
        _client.Dispose();
    }

    private async Task<bool> ConnectAsync(CancellationToken cancellationToken)
    {
        var broker = _mqtt.Broker!;
        var builder = new MqttClientOptionsBuilder()
            .WithTcpServer(broker.IdnHost, broker.Port)
            .WithClientId(_agent.Id)
            .WithCredentials(_agent.Id, _agent.Secret)
            .WithProtocolVersion(MqttProtocolVersion.V500)
            .WithCleanStart(true)
            .WithKeepAlivePeriod(TimeSpan.FromSeconds(15))
            .WithTimeout(TimeSpan.FromSeconds(10))
            .WithWillTopic(_topics.Status(_agent.Id))
            .WithWillPayload(Encoding.UTF8.GetBytes(AgentStatus.Offline))
            .WithWillRetain()
            .WithWillQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce);
        if (broker.Scheme == "mqtts")
        {
            builder.WithTlsOptions(o => o.UseTls().WithTargetHost(broker.IdnHost)
                .WithCertificateValidationHandler(e => _trust.Validate(e.Certificate, e.Chain, e.SslPolicyErrors)));
        }
        var options = builder.Build();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(15));
        var result = await _client.ConnectAsync(options, timeout.Token);
        if (result.ResultCode != MqttClientConnectResultCode.Success)
        {
            Log.ConnectFailed(_logger, broker, result.ResultCode.ToString());
            return false;
        }
        await PublishAsync(_topics.Status(_agent.Id), Encoding.UTF8.GetBytes(AgentStatus.Online), true, timeout.Token);
        await _client.SubscribeAsync(new MqttClientSubscribeOptionsBuilder()
            .WithTopicFilter(_topics.Desired(_agent.Id), MqttQualityOfServiceLevel.AtLeastOnce).Build(), timeout.Token);
        Log.ConnectedToBroker(_logger, broker);
        Connected?.Invoke();
        return true;
    }

    private async Task ConsumeAsync(CancellationToken cancellationToken)
    {
        await foreach (var payload in _incoming.Reader.ReadAllAsync(CancellationToken.None))
        {
            if (payload.Length == 0)
                continue; // retained desired state was cleared
            try
            {
                // Only what the pinned Coordinator key signed, for this agent, is even decoded.
                var state = DesiredStateSigning.Verify(payload, await _coordinatorKey.GetAsync(cancellationToken), _agent.Id);
                Validate(state);
                var result = await _desired.OfferAsync(state, cancellationToken);
                if (result == DesiredStateHolder.OfferResult.Stale)
                {
                    Log.StaleDesired(_logger, state.Generation, _desired.Current?.Generation ?? 0);
                    _desired.Reject($"Rejected desired state generation {state.Generation}: older than the applied generation {_desired.Current?.Generation} (replayed?).");
                }
                else if (result == DesiredStateHolder.OfferResult.Accepted)
                {
                    Log.DesiredAccepted(_logger, state.Generation);
                }
            }
            catch (DesiredStateRejectedException ex)
            {
                Log.MalformedDesired(_logger, payload.Length, ex.Message);
                _desired.Reject($"Rejected a desired state: {ex.Message}.");
            }
            catch (ProtocolFormatException ex)
            {
                Log.MalformedDesired(_logger, payload.Length, ex.Message);
                _desired.Reject($"Rejected a desired state: {ex.Message}.");
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                Log.DesiredFailed(_logger, ex);
            }
        }
    }

    private static void Validate(DesiredState state)
    {
        if (state.Generation <= 0)
            throw new ProtocolFormatException("Desired state generation must be positive.");
        if (state.Drives is null || state.Drives.Count > 64 || state.Drives.Select(d => d?.Index).Distinct().Count() != state.Drives.Count)
            throw new ProtocolFormatException("Desired state drives must be at most 64 with distinct indexes.");
        foreach (var drive in state.Drives)
        {
            if (drive is null || drive.Index is < 0 or > 63)
                throw new ProtocolFormatException("Desired drive index must be between 0 and 63.");
            if (drive.ImageDigest is not null && !Protocol.Manifests.ImageDigest.TryParse(drive.ImageDigest, out _))
                throw new ProtocolFormatException($"Desired drive {drive.Index} names an invalid digest.");
            if (!Enum.IsDefined(drive.Mode))
                throw new ProtocolFormatException($"Desired drive {drive.Index} has an unknown mode {(int)drive.Mode}.");
            ValidatePull(drive.Pull, $"drive {drive.Index}");
        }
        if (state.Prefetch is { } staged)
        {
            if (staged.Count > 64)
                throw new ProtocolFormatException("Desired state stages at most 64 images.");
            foreach (var image in staged)
            {
                if (image is null || !Protocol.Manifests.ImageDigest.TryParse(image.ImageDigest, out _))
                    throw new ProtocolFormatException("A staged image names an invalid digest.");
                ValidatePull(image.Pull, $"staged image {image.ImageDigest}");
            }
        }
    }

    /// <summary>A pull policy's shape (a window that can never open is kept to as written: the pull waits, reported so).</summary>
    private static void ValidatePull(PullPolicy? pull, string what)
    {
        if (pull is null)
            return;
        if (pull.MaxBytesPerSecond is < 0)
            throw new ProtocolFormatException($"The pull policy of {what} has a negative cap.");
        if (pull.Windows is { Count: > 64 } || pull.Windows?.Any(w => w is null) == true)
            throw new ProtocolFormatException($"The pull policy of {what} has more than 64 windows, or an empty one.");
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Connected to MQTT broker {Broker}")]
        public static partial void ConnectedToBroker(ILogger logger, Uri broker);

        [LoggerMessage(2, LogLevel.Warning, "Cannot connect to MQTT broker {Broker}: {Reason}; retrying")]
        public static partial void ConnectFailed(ILogger logger, Uri broker, string reason);

        [LoggerMessage(3, LogLevel.Warning, "Dropped malformed or untrusted desired state ({Length} bytes): {Reason}")]
        public static partial void MalformedDesired(ILogger logger, int length, string reason);

        [LoggerMessage(4, LogLevel.Warning, "Refused desired generation {Generation}: older than the applied generation {Current}")]
        public static partial void StaleDesired(ILogger logger, long generation, long current);

        [LoggerMessage(5, LogLevel.Information, "Accepted desired state generation {Generation}")]
        public static partial void DesiredAccepted(ILogger logger, long generation);

        [LoggerMessage(6, LogLevel.Error, "Handling a desired state failed")]
        public static partial void DesiredFailed(ILogger logger, Exception exception);

        [LoggerMessage(7, LogLevel.Warning, "Publishing to {Topic} failed: {Reason}")]
        public static partial void PublishFailed(ILogger logger, string topic, string reason);
    }
}
