using System.Buffers;
using System.Net;
using System.Security.Cryptography;
using Microsoft.Extensions.Options;
using MQTTnet;
using MQTTnet.Protocol;
using MQTTnet.Server;
using MsdFleet.Coordinator.Auth;
using MsdFleet.Protocol.Naming;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.Coordinator.Messaging;

/// <summary>
/// The MQTTnet broker that serves a first run and small fleets. It authenticates every client (the
/// Coordinator with a per-process secret, agents with their own credentials), confines each agent to
/// publishing under its own subtree and subscribing to its own desired state, and keeps retained
/// messages on disk so that a restarted Coordinator knows the fleet again at once.
/// </summary>
public sealed partial class EmbeddedBrokerService : IHostedService, IAsyncDisposable, IAgentSessions
{
    private readonly MqttOptions _options;
    private readonly AgentCredentialStore _agents;
    private readonly TopicNames _topics;
    private readonly ILogger<EmbeddedBrokerService> _logger;
    private readonly string _retainedFile;
    private readonly SemaphoreSlim _saveLock = new(1, 1);
    private MqttServer? _server;

    private readonly Security.TlsCertificates _tls;

    private readonly Integrations.HomeAssistantCredentials _homeAssistant;
    private readonly Integrations.HomeAssistantOptions _homeAssistantOptions;

    public EmbeddedBrokerService(IOptions<MqttOptions> options, AgentCredentialStore agents, TopicNames topics, Security.TlsCertificates tls,
        Integrations.HomeAssistantCredentials homeAssistant, IOptions<Integrations.HomeAssistantOptions> homeAssistantOptions, ILogger<EmbeddedBrokerService> logger)
    {
        _homeAssistant = homeAssistant;
        _homeAssistantOptions = homeAssistantOptions?.Value ?? new Integrations.HomeAssistantOptions();
        _tls = tls;
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Value;
        _agents = agents;
        _topics = topics;
        _logger = logger;
        _retainedFile = Path.Combine(_options.EmbeddedStatePath, "retained.msgpack");
        _acl = new BrokerAcl(topics, CoordinatorUser, _homeAssistantOptions);
    }

    /// <summary>The same rules <c>GET /api/v1/mosquitto/acl</c> renders for an external broker.</summary>
    private readonly BrokerAcl _acl;

    /// <summary>User name and per-process password the Coordinator's own client presents to this broker.</summary>
    public static string CoordinatorUser => "$coordinator";
    public string CoordinatorPassword { get; } = Convert.ToHexString(RandomNumberGenerator.GetBytes(32));

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(_options.EmbeddedStatePath);
        var builder = new MqttServerOptionsBuilder().WithPersistentSessions();
        if (_tls.Server is { } certificate)
        {
            // With TLS on there is no plain listener at all: credentials never cross the wire in clear.
            builder.WithoutDefaultEndpoint()
                .WithEncryptedEndpoint()
                .WithEncryptedEndpointBoundIPAddress(IPAddress.Parse(_options.EmbeddedBindAddress))
                .WithEncryptedEndpointPort(_options.EmbeddedPort)
                .WithEncryptionCertificate(certificate)
                .WithEncryptionSslProtocol(System.Security.Authentication.SslProtocols.Tls12 | System.Security.Authentication.SslProtocols.Tls13);
        }
        else
        {
            builder.WithDefaultEndpoint()
                .WithDefaultEndpointBoundIPAddress(IPAddress.Parse(_options.EmbeddedBindAddress))
                .WithDefaultEndpointPort(_options.EmbeddedPort);
        }
        var serverOptions = builder.Build();
        _server = new MqttServerFactory().CreateMqttServer(serverOptions);
        _server.ValidatingConnectionAsync += ValidateConnectionAsync;
        _server.InterceptingPublishAsync += InterceptPublishAsync;
        _server.InterceptingSubscriptionAsync += InterceptSubscriptionAsync;
        _server.LoadingRetainedMessageAsync += LoadRetainedAsync;
        _server.RetainedMessageChangedAsync += e => SaveRetainedAsync(e.StoredRetainedMessages);
        _server.RetainedMessagesClearedAsync += _ => SaveRetainedAsync([]);
        try
        {
            await _server.StartAsync();
        }
        catch (System.Net.Sockets.SocketException ex)
        {
            throw new InvalidOperationException(
                $"The embedded MQTT broker cannot listen on {_options.EmbeddedBindAddress}:{_options.EmbeddedPort} ({ex.Message}): change Mqtt:EmbeddedPort or stop what uses it.", ex);
        }
        Log.Started(_logger, _tls.Enabled ? "mqtts" : "mqtt", _options.EmbeddedBindAddress, _options.EmbeddedPort);
    }

    /// <summary>Ends a connected agent's session now (after its credentials were disabled or rotated).</summary>
    public async Task EndAsync(string agentId)
    {
        if (_server is null)
            return;
        if ((await _server.GetClientsAsync()).Any(c => c.Id == agentId))
            await _server.DisconnectClientAsync(agentId, MqttDisconnectReasonCode.NotAuthorized);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_server is not null)
            await _server.StopAsync();
    }

    public async ValueTask DisposeAsync()
    {
        _server?.Dispose();
        _saveLock.Dispose();
        await Task.CompletedTask;
    }

    private async Task ValidateConnectionAsync(ValidatingConnectionEventArgs e)
    {
        if (e.UserName == CoordinatorUser)
        {
            e.ReasonCode = CryptographicOperations.FixedTimeEquals(
                System.Text.Encoding.UTF8.GetBytes(e.Password ?? string.Empty), System.Text.Encoding.UTF8.GetBytes(CoordinatorPassword))
                ? MqttConnectReasonCode.Success : MqttConnectReasonCode.BadUserNameOrPassword;
            return;
        }
        if (e.UserName == Integrations.HomeAssistantOptions.MqttUser)
        {
            var allowed = _homeAssistantOptions.Enabled && await _homeAssistant.VerifyAsync(e.Password ?? string.Empty, e.CancellationToken);
            e.ReasonCode = allowed ? MqttConnectReasonCode.Success : MqttConnectReasonCode.BadUserNameOrPassword;
            if (!allowed)
                Log.ConnectionRefused(_logger, e.ClientId, e.UserName);
            return;
        }
        // Agents: the user name is the agent id; the client id must be the agent id too, so one agent's
        // session can never take over another's.
        var ok = NameRules.TryValidateAgentId(e.UserName, out _)
            && e.ClientId == e.UserName
            && await _agents.VerifyAsync(e.UserName, e.Password ?? string.Empty, e.CancellationToken);
        e.ReasonCode = ok ? MqttConnectReasonCode.Success : MqttConnectReasonCode.BadUserNameOrPassword;
        if (!ok)
            Log.ConnectionRefused(_logger, e.ClientId, e.UserName);
    }

    private Task InterceptPublishAsync(InterceptingPublishEventArgs e)
    {
        if (e.ClientId == null) // null client id: messages the server injects itself
            return Task.CompletedTask;
        if (!_acl.Allows(e.UserName ?? string.Empty, e.ApplicationMessage.Topic, BrokerAcl.Access.Write))
        {
            e.ProcessPublish = false;
            e.Response.ReasonCode = MqttPubAckReasonCode.NotAuthorized;
            Log.PublishDenied(_logger, e.ClientId, e.ApplicationMessage.Topic);
        }
        return Task.CompletedTask;
    }

    private Task InterceptSubscriptionAsync(InterceptingSubscriptionEventArgs e)
    {
        if (!_acl.AllowsSubscription(e.UserName ?? string.Empty, e.TopicFilter.Topic))
        {
            e.ProcessSubscription = false;
            e.Response.ReasonCode = MqttSubscribeReasonCode.NotAuthorized;
            Log.SubscribeDenied(_logger, e.ClientId, e.TopicFilter.Topic);
        }
        return Task.CompletedTask;
    }

    private async Task LoadRetainedAsync(LoadingRetainedMessagesEventArgs e)
    {
        if (!File.Exists(_retainedFile))
            return;
        try
        {
            var stored = ProtocolSerializer.Deserialize<List<RetainedRecord>>(await File.ReadAllBytesAsync(_retainedFile), 256 * 1024 * 1024);
            e.LoadedRetainedMessages = stored.Select(r => new MqttApplicationMessageBuilder()
                .WithTopic(r.Topic).WithPayload(r.Payload).WithRetainFlag().WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce).Build()).ToList();
            Log.RetainedLoaded(_logger, stored.Count);
        }
        catch (Exception ex) when (ex is MsdFleet.Protocol.ProtocolFormatException or IOException)
        {
            Log.RetainedUnreadable(_logger, _retainedFile, ex);
        }
    }

    private async Task SaveRetainedAsync(IReadOnlyList<MqttApplicationMessage> messages)
    {
        var records = messages.Select(m => new RetainedRecord { Topic = m.Topic, Payload = m.Payload.ToArray() }).ToList();
        await _saveLock.WaitAsync();
        try
        {
            var temp = _retainedFile + ".tmp";
            await File.WriteAllBytesAsync(temp, ProtocolSerializer.Serialize(records));
            File.Move(temp, _retainedFile, overwrite: true);
        }
        catch (IOException ex)
        {
            Log.RetainedUnwritable(_logger, _retainedFile, ex);
        }
        finally
        {
            _saveLock.Release();
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Embedded MQTT broker listening on {Scheme}://{Address}:{Port}")]
        public static partial void Started(ILogger logger, string scheme, string address, int port);

        [LoggerMessage(2, LogLevel.Warning, "Refused MQTT connection from client {ClientId} (user {UserName})")]
        public static partial void ConnectionRefused(ILogger logger, string clientId, string? userName);

        [LoggerMessage(3, LogLevel.Warning, "Denied publish by {ClientId} to {Topic}")]
        public static partial void PublishDenied(ILogger logger, string clientId, string topic);

        [LoggerMessage(4, LogLevel.Warning, "Denied subscription by {ClientId} to {Topic}")]
        public static partial void SubscribeDenied(ILogger logger, string clientId, string topic);

        [LoggerMessage(5, LogLevel.Information, "Loaded {Count} retained messages")]
        public static partial void RetainedLoaded(ILogger logger, int count);

        [LoggerMessage(6, LogLevel.Warning, "Retained message file {Path} is unreadable; starting empty")]
        public static partial void RetainedUnreadable(ILogger logger, string path, Exception exception);

        [LoggerMessage(7, LogLevel.Error, "Could not save retained messages to {Path}")]
        public static partial void RetainedUnwritable(ILogger logger, string path, Exception exception);
    }
}

[MessagePack.MessagePackObject]
public sealed class RetainedRecord
{
    [MessagePack.Key(0)] public string Topic { get; set; } = string.Empty;
    [MessagePack.Key(1)] public byte[] Payload { get; set; } = [];
}
