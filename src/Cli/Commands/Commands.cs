using System.ComponentModel;
using System.Net.Http.Json;
using System.Net.ServerSentEvents;
using System.Text.Json.Nodes;
using Spectre.Console;
using Spectre.Console.Cli;

namespace MsdFleet.Cli.Commands;

public class GlobalSettings : CommandSettings
{
    [CommandOption("--json")]
    [Description("Print one JSON document (or, for watch, one per line) instead of tables.")]
    public bool Json { get; init; }

    [CommandOption("--config <FILE>")]
    [Description("Configuration file (default ~/.config/msdctl/config.json or $MSDCTL_CONFIG).")]
    public string? Config { get; init; }

    public CoordinatorClient Client() => new(CliConfig.Load(Config));
}

public sealed class LoginSettings : GlobalSettings
{
    [CommandOption("--server <URL>")]
    [Description("The Coordinator, e.g. https://fleet.example.net:8443")]
    public string? Server { get; init; }

    [CommandOption("--user <NAME>")]
    [Description("Log in as this user (password from the prompt or $MSDCTL_PASSWORD) and mint a personal token.")]
    public string? User { get; init; }

    [CommandOption("--token <TOKEN>")]
    [Description("Use this API token instead.")]
    public string? Token { get; init; }

    [CommandOption("--ca <FILE>")]
    [Description("PEM CA the Coordinator's certificate chains to (its generated ca.crt).")]
    public string? Ca { get; init; }
}

public sealed class LoginCommand : AsyncCommand<LoginSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, LoginSettings settings, CancellationToken cancellationToken)
    {
        var existing = CliConfig.Load(settings.Config);
        var server = settings.Server ?? existing.Server ?? throw new CliException(ExitCodes.Usage, "Give --server URL.");
        var ca = settings.Ca is null ? existing.CaFile : Path.GetFullPath(settings.Ca);
        string token;
        if (settings.Token is { Length: > 0 } given)
        {
            token = given;
        }
        else if (settings.User is { Length: > 0 } user)
        {
            var password = Environment.GetEnvironmentVariable("MSDCTL_PASSWORD") is { Length: > 0 } fromEnv ? fromEnv
                : AnsiConsole.Prompt(new TextPrompt<string>($"Password for {user}:").Secret());
            using var anonymous = new CoordinatorClient(new CliConfig(server, null, ca), requireToken: false);
            var session = await anonymous.SendJsonAsync(HttpMethod.Post, "api/v1/session/login", new { username = user, password }, cancellationToken);
            var csrf = session?["csrfToken"]?.GetValue<string>() ?? throw new CliException("The Coordinator did not return a session.");
            using var request = new HttpRequestMessage(HttpMethod.Post, "api/v1/session/token")
            {
                Content = JsonContent.Create(new { name = $"msdctl on {Environment.MachineName}" }),
            };
            request.Headers.Add("X-CSRF-Token", csrf);
            using var minted = await anonymous.SendAsync(request, cancellationToken);
            token = (await minted.Content.ReadFromJsonAsync<JsonNode>(cancellationToken))?["token"]?.GetValue<string>()
                ?? throw new CliException("The Coordinator did not return a token.");
            using var logout = new HttpRequestMessage(HttpMethod.Post, "api/v1/session/logout");
            logout.Headers.Add("X-CSRF-Token", csrf);
            (await anonymous.SendAsync(logout, cancellationToken)).Dispose();
        }
        else
        {
            throw new CliException(ExitCodes.Usage, "Give --user NAME (password prompted) or --token TOKEN.");
        }
        var config = new CliConfig(server, token, ca);
        using (var client = new CoordinatorClient(config))
        {
            var who = await client.GetJsonAsync("api/v1/session", cancellationToken);
            config.Save(settings.Config);
            if (settings.Json)
                Output.Json(new { server, user = who?["user"]?.GetValue<string>(), role = who?["role"]?.GetValue<string>() });
            else
                AnsiConsole.MarkupLineInterpolated($"Logged in to [bold]{server}[/] as [bold]{who?["user"]}[/] ({who?["role"]}); saved to {settings.Config ?? CliConfig.DefaultPath} (mode 0600).");
        }
        return ExitCodes.Ok;
    }
}

public sealed class ImageListCommand : AsyncCommand<GlobalSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, GlobalSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        var images = (await client.GetJsonAsync("api/v1/images", cancellationToken))!.AsArray();
        if (settings.Json)
        {
            Output.Json(images);
            return ExitCodes.Ok;
        }
        var table = new Table().AddColumns("Name", "Size", "Media", "Digest", "Created");
        foreach (var i in images)
        {
            var media = i!["media"];
            table.AddRow(Markup.Escape(Output.Str(i["name"])), Output.Bytes(i["size"]!.GetValue<long>()),
                Markup.Escape(media is null ? "–" : $"{Output.Str(media["format"])} {Output.Str(media["volumeLabel"])} → {Output.Str(media["suggestedMode"])}"),
                Output.Str(i["digest"])[..19], Output.Str(i["createdAt"]));
        }
        AnsiConsole.Write(table);
        return ExitCodes.Ok;
    }
}

public sealed class ImageRemoveSettings : GlobalSettings
{
    [CommandArgument(0, "<NAME>")]
    public string Name { get; init; } = "";

    [CommandOption("-y|--yes")]
    [Description("Do not ask for confirmation.")]
    public bool Yes { get; init; }
}

public sealed class ImageRemoveCommand : AsyncCommand<ImageRemoveSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, ImageRemoveSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        if (!settings.Yes && !settings.Json)
        {
            if (Console.IsInputRedirected)
                throw new CliException(ExitCodes.Usage, "Refusing to delete without confirmation: pass --yes.");
            if (!await AnsiConsole.ConfirmAsync($"Delete image '{Markup.Escape(settings.Name)}'?", false, cancellationToken))
                return ExitCodes.Failure;
        }
        (await client.SendAsync(new HttpRequestMessage(HttpMethod.Delete, $"api/v1/images/{Uri.EscapeDataString(settings.Name)}"), cancellationToken)).Dispose();
        if (settings.Json)
            Output.Json(new { deleted = settings.Name });
        else
            AnsiConsole.MarkupLineInterpolated($"Deleted [bold]{settings.Name}[/].");
        return ExitCodes.Ok;
    }
}

public sealed class AgentListSettings : GlobalSettings
{
    [CommandOption("-l|--selector <SELECTOR>")]
    [Description("Only agents whose labels match, in Kubernetes syntax: 'site=ams1,rack in (r1,r2),!maintenance'.")]
    public string? Selector { get; init; }

    [CommandOption("-q|--search <TEXT>")]
    [Description("Only agents whose id or labels contain TEXT (case-insensitive).")]
    public string? Search { get; init; }

    [CommandOption("--state <STATES>")]
    [Description("Only agents in any of these states: online, offline, drifted, failing, pulling (comma-separated).")]
    public string? State { get; init; }

    public override ValidationResult Validate() =>
        MsdFleet.Protocol.Naming.LabelSelector.TryParse(Selector, out _, out var error) ? ValidationResult.Success() : ValidationResult.Error(error);

    /// <summary>The list's query string.</summary>
    public string Query()
    {
        var parts = new List<string>();
        if (!string.IsNullOrWhiteSpace(Selector))
            parts.Add("selector=" + Uri.EscapeDataString(Selector));
        if (!string.IsNullOrWhiteSpace(Search))
            parts.Add("q=" + Uri.EscapeDataString(Search));
        if (!string.IsNullOrWhiteSpace(State))
            parts.Add("state=" + Uri.EscapeDataString(State));
        return parts.Count == 0 ? "" : "?" + string.Join('&', parts);
    }
}

public sealed class AgentListCommand : AsyncCommand<AgentListSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, AgentListSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        var agents = (await client.GetJsonAsync("api/v1/agents" + settings.Query(), cancellationToken))!.AsArray();
        if (settings.Json)
        {
            Output.Json(agents);
            return ExitCodes.Ok;
        }
        var table = new Table().AddColumns("Agent", "Site", "Status", "Drives", "Transfers", "Last error");
        foreach (var a in agents)
        {
            var drives = string.Join("\n", (a!["drives"]?.AsArray() ?? []).Select(d => DriveText(d!, a["desired"])));
            var transfers = string.Join("\n", (a["transfers"]?.AsArray() ?? []).Where(t => Output.Str(t!["state"]) != "done")
                .Select(t => $"{Output.Str(t!["state"])} {Output.Bytes(t["bytesDone"]!.GetValue<long>())}/{Output.Bytes(t["bytesTotal"]!.GetValue<long>())}"));
            table.AddRow(Markup.Escape(Output.Str(a["id"])), Markup.Escape(Output.Str(a["site"])), a["online"]!.GetValue<bool>() ? "[green]online[/]" : "[grey]offline[/]",
                Markup.Escape(drives.Length == 0 ? "–" : drives), Markup.Escape(transfers), Markup.Escape(Output.Str(a["lastError"])));
        }
        AnsiConsole.Write(table);
        return ExitCodes.Ok;
    }

    internal static string DriveText(JsonNode drive, JsonNode? desired)
    {
        var image = drive["image"]?.GetValue<string>();
        var name = desired?["drives"]?.AsArray().FirstOrDefault(d => d!["digest"]?.GetValue<string>() == image && image is not null)?["image"]?.GetValue<string>();
        var extra = Extra(drive);
        if (image is null)
            return $"#{drive["index"]} empty{extra}";
        return $"#{drive["index"]} {name ?? image[..19]} {Output.Str(drive["mode"])} {(drive["readOnly"]!.GetValue<bool>() ? "ro" : "rw")} " +
            $"{(drive["connected"]!.GetValue<bool>() ? "connected" : "disconnected")} (host: {Output.Str(drive["hostState"])}){extra}";
    }

    /// <summary>What the host read and wrote, the working copy and the last snapshot: "· host read 3.1 MiB, 12 s ago".</summary>
    private static string Extra(JsonNode drive)
    {
        var parts = new List<string>();
        if (drive["hostRead"] is { } read && read["lastReadAt"]?.GetValue<DateTimeOffset>() is { } at)
        {
            var ago = DateTimeOffset.UtcNow - at;
            var when = ago.TotalSeconds < 90 ? $"{Math.Max(0, (int)ago.TotalSeconds)} s ago" : ago.TotalMinutes < 90 ? $"{(int)ago.TotalMinutes} min ago" : $"{(int)ago.TotalHours} h ago";
            parts.Add(read["bytesRead"]?.GetValue<long>() is { } bytes ? $"host read {Output.Bytes(bytes)}, {when}" : $"host read {when}");
        }
        if (drive["workingCopy"] is { } copy)
            parts.Add(copy["unsavedWrites"]!.GetValue<bool>() ? "working copy with unsaved writes" : "working copy");
        if (drive["snapshot"] is { } snapshot)
            parts.Add($"saved as {Output.Str(snapshot["image"])}: {Output.Str(snapshot["state"])}" + (snapshot["error"]?.GetValue<string>() is { } e ? $" ({e})" : ""));
        return parts.Count == 0 ? "" : " · " + string.Join(" · ", parts);
    }
}

public sealed class AgentLabelSettings : GlobalSettings
{
    [CommandArgument(0, "<AGENT>")]
    public string Agent { get; init; } = "";

    [CommandArgument(1, "[CHANGES]")]
    [Description("key=value sets a central label, key- removes one (as kubectl label does).")]
    public string[] Changes { get; init; } = [];

    [CommandOption("--clear")]
    [Description("Remove every central label first.")]
    public bool Clear { get; init; }

    public override ValidationResult Validate()
    {
        if (Changes.Length == 0 && !Clear)
            return ValidationResult.Error("Give key=value to set or key- to remove (or --clear).");
        foreach (var change in Changes)
        {
            var (key, value) = AgentLabelCommand.Split(change);
            if (!MsdFleet.Protocol.Naming.Labels.TryValidateKey(key, out var error) || (value is not null && !MsdFleet.Protocol.Naming.Labels.TryValidateValue(value, out error)))
                return ValidationResult.Error(error);
        }
        return ValidationResult.Success();
    }
}

/// <summary><c>msdctl agent label rack1-07 site=ams1 rack=r1 maintenance-</c>: changes the agent's central labels (they override what it reports).</summary>
public sealed class AgentLabelCommand : AsyncCommand<AgentLabelSettings>
{
    /// <summary><c>key=value</c> → (key, value); <c>key-</c> → (key, null).</summary>
    internal static (string Key, string? Value) Split(string change)
    {
        var eq = change.IndexOf('=', StringComparison.Ordinal);
        if (eq >= 0)
            return (change[..eq], change[(eq + 1)..]);
        return change.EndsWith('-') ? (change[..^1], null) : (change, "");
    }

    public override async Task<int> ExecuteAsync(CommandContext context, AgentLabelSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        var path = $"api/v1/agents/{Uri.EscapeDataString(settings.Agent)}";
        var agent = (await client.GetJsonAsync(path, cancellationToken))!;
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        if (!settings.Clear)
        {
            foreach (var (key, value) in agent["centralLabels"]?.AsObject() ?? new JsonObject())
                labels[key] = Output.Str(value);
        }
        foreach (var (key, value) in settings.Changes.Select(Split))
        {
            if (value is null)
                labels.Remove(key);
            else
                labels[key] = value;
        }
        var updated = (await client.SendJsonAsync(HttpMethod.Put, path + "/labels", new { labels }, cancellationToken))!;
        if (settings.Json)
        {
            Output.Json(updated);
            return ExitCodes.Ok;
        }
        AnsiConsole.MarkupLine($"[green]{Markup.Escape(settings.Agent)}[/]: " + Markup.Escape(string.Join(", ",
            (updated["labels"]?.AsObject() ?? new JsonObject()).Select(kv => $"{kv.Key}={Output.Str(kv.Value)}"))));
        return ExitCodes.Ok;
    }
}

public sealed class AgentShowSettings : GlobalSettings
{
    [CommandArgument(0, "<AGENT>")]
    public string Agent { get; init; } = "";
}

public sealed class AgentShowCommand : AsyncCommand<AgentShowSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, AgentShowSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        var agent = await client.GetJsonAsync($"api/v1/agents/{Uri.EscapeDataString(settings.Agent)}", cancellationToken);
        if (settings.Json)
        {
            Output.Json(agent);
            return ExitCodes.Ok;
        }
        var grid = new Grid().AddColumn().AddColumn();
        grid.AddRow("Agent", Markup.Escape(Output.Str(agent!["id"])));
        grid.AddRow("Status", agent["online"]!.GetValue<bool>() ? "[green]online[/]" : "[grey]offline[/]");
        grid.AddRow("Version", Markup.Escape(Output.Str(agent["version"])));
        grid.AddRow("Labels", Markup.Escape(string.Join(", ", (agent["labels"]?.AsObject() ?? []).Select(l => $"{l.Key}={Output.Str(l.Value)}"))));
        foreach (var d in agent["drives"]?.AsArray() ?? [])
            grid.AddRow("Drive", Markup.Escape(AgentListCommand.DriveText(d!, agent["desired"])));
        grid.AddRow("Cache", $"{(agent["cache"]?.AsArray().Count ?? 0)} images, {Output.Bytes(agent["freeBytes"]?.GetValue<long>())} free");
        grid.AddRow("Generation", $"applied {Output.Str(agent["appliedGeneration"])} / desired {Output.Str(agent["desired"]?["generation"])}");
        grid.AddRow("Last error", Markup.Escape(Output.Str(agent["lastError"])));
        AnsiConsole.Write(grid);
        return ExitCodes.Ok;
    }
}

public sealed class MountSettings : GlobalSettings
{
    [CommandArgument(0, "<AGENT>")]
    public string Agent { get; init; } = "";

    [CommandArgument(1, "<IMAGE>")]
    public string Image { get; init; } = "";

    [CommandOption("--drive <N>")]
    [DefaultValue(0)]
    public int Drive { get; init; }

    [CommandOption("--cdrom")]
    public bool Cdrom { get; init; }

    [CommandOption("--flash")]
    public bool Flash { get; init; }

    [CommandOption("--rw")]
    [Description("Writable (flash only).")]
    public bool ReadWrite { get; init; }

    [CommandOption("--no-connect")]
    [Description("Stage the image without presenting it to the server.")]
    public bool NoConnect { get; init; }

    [CommandOption("--wait")]
    [Description("Wait until the agent reports the drive as asked (pull, verify, attach).")]
    public bool Wait { get; init; }

    [CommandOption("--timeout <SECONDS>")]
    [DefaultValue(600)]
    public int Timeout { get; init; }

    public override ValidationResult Validate() =>
        Cdrom && Flash ? ValidationResult.Error("--cdrom and --flash exclude each other.")
        : Cdrom && ReadWrite ? ValidationResult.Error("A CD-ROM is always read-only; use --flash --rw.")
        : Drive is < 0 or > 7 ? ValidationResult.Error("--drive must be 0..7.")
        : ValidationResult.Success();
}

public sealed class MountCommand : AsyncCommand<MountSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, MountSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        var mode = settings.Cdrom ? "cdrom" : settings.Flash ? "flash" : null;
        if (mode is null)
        {
            // The catalog's media detection suggests the mode when none is given.
            var image = await client.FindImageAsync(settings.Image, cancellationToken);
            mode = Output.Str(image["media"]?["suggestedMode"]) is { Length: > 0 } suggested ? suggested : "flash";
        }
        var desired = await client.SendJsonAsync(HttpMethod.Put, $"api/v1/agents/{Uri.EscapeDataString(settings.Agent)}/drives/{settings.Drive}",
            new { image = settings.Image, mode, readOnly = !settings.ReadWrite, connected = !settings.NoConnect }, cancellationToken);
        var generation = desired!["generation"]!.GetValue<long>();
        var digest = desired["drives"]!.AsArray().First(d => d!["index"]!.GetValue<int>() == settings.Drive)!["digest"]!.GetValue<string>();
        JsonNode? reached = null;
        if (settings.Wait)
            reached = await Waiting.ForAgentAsync(client, settings.Agent, generation, a => a["drives"]?.AsArray()
                .Any(d => d!["index"]!.GetValue<int>() == settings.Drive && Output.Str(d["image"]) == digest && d["connected"]!.GetValue<bool>() == !settings.NoConnect) == true,
                settings.Timeout, !settings.Json, cancellationToken);
        if (settings.Json)
            Output.Json(new { agent = settings.Agent, drive = settings.Drive, image = settings.Image, digest, mode, generation, applied = reached is not null });
        else
            AnsiConsole.MarkupLineInterpolated($"{(reached is null ? "Asked" : "Done:")} [bold]{settings.Agent}[/] drive {settings.Drive} ← [bold]{settings.Image}[/] as {mode} (generation {generation}).");
        return ExitCodes.Ok;
    }
}

public sealed class EjectSettings : GlobalSettings
{
    [CommandArgument(0, "<AGENT>")]
    public string Agent { get; init; } = "";

    [CommandOption("--drive <N>")]
    [DefaultValue(0)]
    public int Drive { get; init; }

    [CommandOption("--wait")]
    public bool Wait { get; init; }

    [CommandOption("--timeout <SECONDS>")]
    [DefaultValue(120)]
    public int Timeout { get; init; }
}

public sealed class EjectCommand : AsyncCommand<EjectSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, EjectSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        var desired = await client.SendJsonAsync(HttpMethod.Put, $"api/v1/agents/{Uri.EscapeDataString(settings.Agent)}/drives/{settings.Drive}",
            new { image = (string?)null }, cancellationToken);
        var generation = desired!["generation"]!.GetValue<long>();
        JsonNode? reached = null;
        if (settings.Wait)
            reached = await Waiting.ForAgentAsync(client, settings.Agent, generation, a => a["drives"]?.AsArray()
                .Any(d => d!["index"]!.GetValue<int>() == settings.Drive && !d["connected"]!.GetValue<bool>()) == true, settings.Timeout, !settings.Json, cancellationToken);
        if (settings.Json)
            Output.Json(new { agent = settings.Agent, drive = settings.Drive, generation, applied = reached is not null });
        else
            AnsiConsole.MarkupLineInterpolated($"{(reached is null ? "Asked" : "Done:")} [bold]{settings.Agent}[/] drive {settings.Drive} ejected (generation {generation}).");
        return ExitCodes.Ok;
    }
}

internal static class Waiting
{
    /// <summary>Polls the agent until it applied <paramref name="generation"/> and the predicate holds; its lastError ends the wait early.</summary>
    public static async Task<JsonNode> ForAgentAsync(CoordinatorClient client, string agent, long generation, Func<JsonNode, bool> done, int timeoutSeconds,
        bool showStatus, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow.AddSeconds(timeoutSeconds);
        async Task<JsonNode> LoopAsync(StatusContext? status)
        {
            while (true)
            {
                var a = (await client.GetJsonAsync($"api/v1/agents/{Uri.EscapeDataString(agent)}", ct))!;
                var applied = a["appliedGeneration"]?.GetValue<long>() ?? 0;
                if (applied >= generation && done(a))
                    return a;
                if (applied >= generation && Output.Str(a["lastError"]) is { Length: > 0 } error)
                    throw new CliException(ExitCodes.Failure, $"{agent}: {error}");
                var transfer = a["transfers"]?.AsArray().FirstOrDefault(t => Output.Str(t!["state"]) != "done");
                status?.Status(transfer is null ? $"waiting for {agent} (applied generation {applied} of {generation})…"
                    : $"{agent} pulling {Output.Bytes(transfer["bytesDone"]!.GetValue<long>())} / {Output.Bytes(transfer["bytesTotal"]!.GetValue<long>())}…");
                if (DateTime.UtcNow > deadline)
                    throw new CliException(ExitCodes.Failure, $"{agent} did not report generation {generation} within {timeoutSeconds} s (is it online?).");
                await Task.Delay(500, ct);
            }
        }
        return showStatus && !Console.IsOutputRedirected
            ? await AnsiConsole.Status().StartAsync("waiting…", LoopAsync)
            : await LoopAsync(null);
    }
}

public sealed class WatchSettings : GlobalSettings
{
    [CommandOption("--since <N>")]
    [Description("Replay events after this sequence number (if the Coordinator still holds them).")]
    public long? Since { get; init; }
}

public sealed class WatchCommand : AsyncCommand<WatchSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, WatchSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        long? last = settings.Since;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            stop.Cancel();
        };
        while (!stop.IsCancellationRequested)
        {
            try
            {
                var request = new HttpRequestMessage(HttpMethod.Get, "api/v1/events" + (last is { } s ? $"?since={s}" : ""));
                using var response = await client.SendAsync(request, stop.Token, HttpCompletionOption.ResponseHeadersRead);
                await using var stream = await response.Content.ReadAsStreamAsync(stop.Token);
                await foreach (var e in SseParser.Create(stream).EnumerateAsync(stop.Token))
                {
                    if (e.EventType is "ping")
                        continue;
                    if (e.EventType is "hello")
                    {
                        // Where the stream starts: a reconnect asks for what came after it.
                        last ??= JsonNode.Parse(e.Data)?["sequence"]?.GetValue<long>();
                        continue;
                    }
                    if (long.TryParse(e.EventId, out var id))
                        last = id;
                    if (settings.Json)
                    {
                        Console.Out.WriteLine(new JsonObject { ["sequence"] = last, ["type"] = e.EventType, ["data"] = JsonNode.Parse(e.Data) }.ToJsonString());
                        continue;
                    }
                    var data = JsonNode.Parse(e.Data)!;
                    var text = e.EventType switch
                    {
                        "agent" => $"{Output.Str(data["id"])} {(data["online"]!.GetValue<bool>() ? "online" : "offline")} " +
                            string.Join("; ", (data["drives"]?.AsArray() ?? []).Select(d => AgentListCommand.DriveText(d!, data["desired"]))),
                        "image" => $"image {Output.Str(data["name"])} {Output.Str(data["action"])}",
                        "progress" => $"{Output.Str(data["agentId"])} {Output.Str(data["kind"])} {Output.Bytes(data["bytesDone"]?.GetValue<long>())}/{Output.Bytes(data["bytesTotal"]?.GetValue<long>())} {Output.Str(data["message"])}",
                        "reset" => "(missed events: state reloaded — run agent ls)",
                        _ => $"{e.EventType} {e.Data}",
                    };
                    AnsiConsole.MarkupLineInterpolated($"[grey]{DateTime.Now:HH:mm:ss}[/] {text}");
                }
            }
            catch (CliException ex) when (ex.ExitCode == ExitCodes.Unreachable && !stop.IsCancellationRequested)
            {
                // Reconnect; the Coordinator replays what we missed from `last`.
                await Task.Delay(2000, stop.Token).ContinueWith(_ => { }, TaskScheduler.Default);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
            }
            catch (IOException) when (!stop.IsCancellationRequested)
            {
                await Task.Delay(1000, stop.Token).ContinueWith(_ => { }, TaskScheduler.Default);
            }
        }
        return ExitCodes.Ok;
    }
}
