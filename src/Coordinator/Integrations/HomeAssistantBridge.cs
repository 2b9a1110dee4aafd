using System.Buffers;
using System.Collections.Concurrent;
using System.Security.Claims;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.Extensions.Options;
using MsdFleet.Coordinator.Auth;
using MsdFleet.Coordinator.Catalog;
using MsdFleet.Coordinator.Fleet;
using MsdFleet.Coordinator.Messaging;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Integrations;

/// <summary>
/// Home Assistant MQTT discovery. Each agent becomes a device with, per drive, a <c>select</c> (image),
/// a <c>switch</c> (connected), a <c>binary_sensor</c> (the server enumerated the drive) and a
/// <c>button</c> (eject), plus <c>sensor</c>s for pull progress and free space. Availability is the
/// bridge's (the Coordinator's last will) and the agent's own status together. Discovery is
/// re-published when Home Assistant announces <c>online</c>. Commands go through the same path as
/// <c>PUT /api/v1/agents/{id}/drives/{n}</c>, as the operator <c>home-assistant</c>, and are audited.
/// </summary>
public sealed partial class HomeAssistantBridge : BackgroundService, IMqttExtension
{
    public const string None = "(none)";
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private static readonly ClaimsPrincipal Actor = new(new ClaimsIdentity(
        [new Claim(ClaimTypes.Name, "home-assistant"), new Claim(ClaimTypes.Role, Roles.Operator)], "mqtt"));

    private readonly HomeAssistantOptions _options;
    private readonly TopicNames _topics;
    private readonly FleetRegistry _registry;
    private readonly DesiredStateStore _desired;
    private readonly ImageCatalog _catalog;
    private readonly AgentCredentialStore _credentials;
    private readonly IServiceProvider _services;
    private readonly ILogger<HomeAssistantBridge> _logger;
    private readonly Channel<Func<CancellationToken, Task>> _work = Channel.CreateBounded<Func<CancellationToken, Task>>(
        new BoundedChannelOptions(1024) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true });
    private readonly ConcurrentDictionary<string, string> _published = new(StringComparer.Ordinal);
    private IReadOnlyList<CatalogEntry> _images = [];
    // Per agent, what its discovery configs were last built from: an agent's report changes its states, rarely its entities,
    // so the configs (a dozen JSON documents) are built again only when these inputs change. Cleared with _published.
    private readonly ConcurrentDictionary<string, string> _discovered = new(StringComparer.Ordinal);
    private readonly State.LeaderLease _leader;
    private readonly DriveAssignment _assignment;
    private readonly FleetView _fleet;

    public HomeAssistantBridge(IOptions<HomeAssistantOptions> options, TopicNames topics, FleetRegistry registry, DesiredStateStore desired,
        ImageCatalog catalog, AgentCredentialStore credentials, State.LeaderLease leader, DriveAssignment assignment, FleetView fleet, IServiceProvider services,
        ILogger<HomeAssistantBridge> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        _assignment = assignment;
        _fleet = fleet;
        _leader = leader;
        _options = options.Value;
        _topics = topics;
        _registry = registry;
        _desired = desired;
        _catalog = catalog;
        _credentials = credentials;
        _services = services;
        _logger = logger;
    }

    private string Base => $"{_topics.Prefix}/ha";
    private string BridgeTopic => $"{Base}/bridge";
    private string StatusTopic => $"{_options.DiscoveryPrefix}/status";

    public IEnumerable<string> TopicFilters => _options.Commands
        ? [StatusTopic, $"{Base}/+/+/+/set", $"{Base}/+/+/+/press"]
        : [StatusTopic];

    public (string Topic, string Payload)? Will => (BridgeTopic, "offline");

    private CoordinatorMqttService Mqtt => _services.GetRequiredService<CoordinatorMqttService>();

    public Task OnConnectedAsync(CancellationToken cancellationToken)
    {
        _published.Clear();
        _discovered.Clear();
        _work.Writer.TryWrite(PublishEverythingAsync);
        return Task.CompletedTask;
    }

    public void OnMessage(string topic, ReadOnlySequence<byte> payload)
    {
        var text = Encoding.UTF8.GetString(payload);
        if (topic == StatusTopic)
        {
            if (text == "online")
            {
                // Home Assistant restarted: it forgot its entities; announce them again.
                _published.Clear();
                _discovered.Clear();
        _discovered.Clear();
                _work.Writer.TryWrite(PublishEverythingAsync);
            }
            return;
        }
        if (!_options.Commands)
            return;
        // Every replica receives every command; the leader alone carries it out, so it is done (and audited) once.
        if (!_leader.IsLeader)
            return;
        // <prefix>/ha/<agent>/drive<n>/<entity>/<set|press>
        var parts = topic[(Base.Length + 1)..].Split('/');
        if (parts.Length != 4 || !NameRules.TryValidateAgentId(parts[0], out _) || !parts[1].StartsWith("drive", StringComparison.Ordinal)
            || !int.TryParse(parts[1].AsSpan(5), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var drive)
            || drive is < 0 or >= DriveLimits.MaxDrives || text.Length > 1024)
        {
            Log.CommandIgnored(_logger, topic, "not a command topic of this bridge");
            return;
        }
        var agent = parts[0];
        _work.Writer.TryWrite(ct => CommandAsync(agent, drive, parts[2], parts[3], text.Trim(), ct));
    }

    public override Task StartAsync(CancellationToken cancellationToken)
    {
        _registry.Changed += OnAgentChanged;
        _desired.Changed += OnAgentChanged;
        _catalog.Changed += OnCatalogChanged;
        return base.StartAsync(cancellationToken);
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        _registry.Changed -= OnAgentChanged;
        _desired.Changed -= OnAgentChanged;
        _catalog.Changed -= OnCatalogChanged;
        await Mqtt.PublishAsync(BridgeTopic, "offline"u8.ToArray(), true, cancellationToken);
        await base.StopAsync(cancellationToken);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await foreach (var item in _work.Reader.ReadAllAsync(stoppingToken))
        {
            try
            {
                await item(stoppingToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                Log.WorkFailed(_logger, ex);
            }
        }
    }

    private void OnAgentChanged(string agentId) => _work.Writer.TryWrite(ct => PublishAgentAsync(agentId, ct));

    // The select's options list every image, so every agent is announced again (PublishEverythingAsync reloads the list).
    private void OnCatalogChanged(string name, string action) => _work.Writer.TryWrite(PublishEverythingAsync);

    private async Task PublishEverythingAsync(CancellationToken ct)
    {
        _images = await _catalog.ListAsync(ct);
        await PublishAsync(BridgeTopic, "online", ct);
        var ids = await _fleet.KnownAgentIdsAsync(ct);
        foreach (var id in ids)
            await PublishAgentAsync(id, ct);
    }

    private async Task PublishAgentAsync(string agentId, CancellationToken ct)
    {
        var view = _fleet.View(agentId);
        var node = "msdfleet_" + new string(agentId.Select(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' ? c : '_').ToArray());
        var device = new JsonObject
        {
            ["identifiers"] = new JsonArray(node),
            ["name"] = agentId,
            ["manufacturer"] = "MsdFleet",
            ["model"] = "EdgeAgent",
            ["sw_version"] = view.Version,
        };
        var availability = new JsonArray(new JsonObject { ["topic"] = BridgeTopic }, new JsonObject { ["topic"] = $"{Base}/{agentId}/availability" });
        JsonObject Entity(string objectId, string name, string? icon)
        {
            var entity = new JsonObject
            {
                ["name"] = name,
                ["unique_id"] = $"{node}_{objectId}",
                ["object_id"] = $"{node}_{objectId}",
                ["device"] = device.DeepClone(),
                ["availability"] = availability.DeepClone(),
                ["availability_mode"] = "all",
            };
            if (icon is not null)
                entity["icon"] = icon;
            return entity;
        }

        var driveCount = Math.Max(1, Math.Max(view.Drives?.Count ?? 0, (view.Desired?.Drives.Select(d => d.Index + 1).DefaultIfEmpty(0).Max()) ?? 0));
        var images = _images;
        var key = $"{view.Version}|{driveCount}|{_options.Commands}|{string.Join('/', images.Select(i => i.Name))}";
        var discover = !(_discovered.TryGetValue(agentId, out var last) && last == key);
        for (var n = 0; n < driveCount; n++)
        {
            var t = $"{Base}/{agentId}/drive{n}";
            if (discover)
            {
                var select = Entity($"drive{n}_image", $"Drive {n} image", "mdi:disc");
                select["state_topic"] = $"{t}/image";
                select["options"] = new JsonArray([None, .. images.Select(i => (JsonNode)i.Name)]);
                var connected = Entity($"drive{n}_connected", $"Drive {n} connected", "mdi:usb");
                connected["state_topic"] = $"{t}/connected";
                var enumerated = Entity($"drive{n}_enumerated", $"Drive {n} seen by server", null);
                enumerated["state_topic"] = $"{t}/enumerated";
                enumerated["device_class"] = "connectivity";
                if (_options.Commands)
                {
                    select["command_topic"] = $"{t}/image/set";
                    connected["command_topic"] = $"{t}/connected/set";
                    var eject = Entity($"drive{n}_eject", $"Drive {n} eject", "mdi:eject");
                    eject["command_topic"] = $"{t}/eject/press";
                    await DiscoverAsync("button", node, $"drive{n}_eject", eject, ct);
                    await DiscoverAsync("select", node, $"drive{n}_image", select, ct);
                    await DiscoverAsync("switch", node, $"drive{n}_connected", connected, ct);
                }
                else
                {
                    // Read-only: the image as a sensor, the connection as a binary sensor.
                    select.Remove("options");
                    await DiscoverAsync("sensor", node, $"drive{n}_image", select, ct);
                    await DiscoverAsync("binary_sensor", node, $"drive{n}_connected", connected, ct);
                }
                await DiscoverAsync("binary_sensor", node, $"drive{n}_enumerated", enumerated, ct);
            }

            var reported = view.Drives?.FirstOrDefault(d => d.Index == n);
            var wanted = view.Desired?.Drives.FirstOrDefault(d => d.Index == n);
            var imageName = reported?.Image is null ? None
                : wanted?.Digest == reported.Image && wanted.Image is not null ? wanted.Image
                : _images.FirstOrDefault(i => i.Digest == reported.Image)?.Name ?? reported.Image;
            await PublishAsync($"{t}/image", imageName, ct);
            await PublishAsync($"{t}/connected", reported?.Connected == true ? "ON" : "OFF", ct);
            await PublishAsync($"{t}/enumerated", reported?.Connected == true && reported.HostState == "configured" ? "ON" : "OFF", ct);
        }

        if (discover)
        {
            var progress = Entity("pull_progress", "Pull progress", "mdi:download");
            progress["state_topic"] = $"{Base}/{agentId}/progress";
            progress["unit_of_measurement"] = "%";
            progress["state_class"] = "measurement";
            await DiscoverAsync("sensor", node, "pull_progress", progress, ct);
            var free = Entity("free_space", "Free space", "mdi:harddisk");
            free["state_topic"] = $"{Base}/{agentId}/free";
            free["unit_of_measurement"] = "B";
            free["device_class"] = "data_size";
            free["state_class"] = "measurement";
            await DiscoverAsync("sensor", node, "free_space", free, ct);
            _discovered[agentId] = key;
        }

        var transfer = view.Transfers?.FirstOrDefault(x => x.State != "done" && x.BytesTotal > 0);
        await PublishAsync($"{Base}/{agentId}/progress",
            transfer is null ? "0" : Math.Round(100.0 * transfer.BytesDone / transfer.BytesTotal, 1).ToString(System.Globalization.CultureInfo.InvariantCulture), ct);
        await PublishAsync($"{Base}/{agentId}/free", (view.FreeBytes ?? 0).ToString(System.Globalization.CultureInfo.InvariantCulture), ct);
        await PublishAsync($"{Base}/{agentId}/availability", view.Online ? "online" : "offline", ct);
    }

    private Task DiscoverAsync(string component, string node, string objectId, JsonObject config, CancellationToken ct) =>
        PublishAsync($"{_options.DiscoveryPrefix}/{component}/{node}/{objectId}/config", config.ToJsonString(Json), ct);

    /// <summary>Retained, and only when the value changed since the last (re)connect.</summary>
    private async Task PublishAsync(string topic, string payload, CancellationToken ct)
    {
        if (_published.TryGetValue(topic, out var previous) && previous == payload)
            return;
        _published[topic] = payload;
        await Mqtt.PublishAsync(topic, Encoding.UTF8.GetBytes(payload), true, ct);
    }

    private async Task CommandAsync(string agent, int drive, string entity, string verb, string payload, CancellationToken ct)
    {
        DriveRequest? request = null;
        var current = _desired.Get(agent)?.Drives.FirstOrDefault(d => d.Index == drive);
        switch (entity, verb)
        {
            case ("image", "set") when payload == None:
            case ("eject", "press"):
                request = new DriveRequest(null, null, null, null);
                break;
            case ("image", "set"):
                var image = _images.FirstOrDefault(i => i.Name == payload);
                if (image is null)
                {
                    Log.CommandIgnored(_logger, $"{agent}/drive{drive}/image", $"no image '{payload}'");
                    return;
                }
                request = new DriveRequest(image.Name, image.Media?.SuggestedMode ?? "flash", true, true);
                break;
            case ("connected", "set") when payload is "ON" or "OFF":
                if (current?.ImageName is null)
                {
                    Log.CommandIgnored(_logger, $"{agent}/drive{drive}/connected", "no image selected on that drive");
                    await PublishAgentAsync(agent, ct); // put Home Assistant's switch back
                    return;
                }
                request = new DriveRequest(current.ImageName, FleetEndpoints.ModeName(current.Mode), current.ReadOnly, payload == "ON");
                break;
        }
        if (request is null)
        {
            Log.CommandIgnored(_logger, $"{agent}/drive{drive}/{entity}/{verb}", $"unexpected payload '{payload}'");
            return;
        }
        try
        {
            await _assignment.AssignAsync(agent, drive, request, Actor, ct); // the same use case as PUT …/drives/{n}
        }
        catch (ApiException ex)
        {
            Log.CommandIgnored(_logger, $"{agent}/drive{drive}/{entity}", ex.Message);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Home Assistant command {Topic} ignored: {Reason}")]
        public static partial void CommandIgnored(ILogger logger, string topic, string reason);

        [LoggerMessage(2, LogLevel.Error, "Home Assistant bridge step failed")]
        public static partial void WorkFailed(ILogger logger, Exception exception);
    }
}
