using System.ComponentModel;
using System.Text.Json.Nodes;
using Spectre.Console;
using Spectre.Console.Cli;

namespace MsdFleet.Cli.Commands;

public sealed class RolloutCreateSettings : GlobalSettings
{
    [CommandArgument(0, "<NAME>")]
    public string Name { get; init; } = "";

    [CommandArgument(1, "<IMAGE>")]
    public string Image { get; init; } = "";

    [CommandOption("-l|--selector <SELECTOR>")]
    [Description("Which agents, in Kubernetes label-selector syntax: 'site=ams1,rack in (r1,r2),!maintenance' (default: all).")]
    public string? Selector { get; init; }

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
    [Description("Put the image on the drive without connecting it to the server.")]
    public bool NoConnect { get; init; }

    [CommandOption("--waves <ENDS>")]
    [Description("Cumulative wave ends, counts or percentages: '1,10%,100%' (default: one wave).")]
    public string? Waves { get; init; }

    [CommandOption("--max-concurrent <N>")]
    [Description("At most N agents assigned and not yet done at a time.")]
    public int? MaxConcurrent { get; init; }

    [CommandOption("--failure-threshold <PERCENT>")]
    [DefaultValue(10)]
    public int FailurePercent { get; init; }

    [CommandOption("--min-executed <N>")]
    [DefaultValue(1)]
    public int MinExecuted { get; init; }

    [CommandOption("--timeout <SECONDS>")]
    [Description("Per agent: how long it may take to report the image attached.")]
    public int? Timeout { get; init; }

    [CommandOption("--stage-only")]
    [Description("Pull into the agents' caches and attach nothing; a later rollout of the same image attaches without moving a byte.")]
    public bool StageOnly { get; init; }

    [CommandOption("--site-bandwidth <BYTES_PER_SECOND>")]
    [Description("Each site's download budget (label site), split among its concurrent pulls (--per-site); suffixes K, M, G.")]
    public string? SiteBandwidth { get; init; }

    [CommandOption("--per-site <N>")]
    [Description("At most N agents of one site pulling at a time (default 1 with --site-bandwidth).")]
    public int? PerSite { get; init; }

    [CommandOption("--window <WINDOW>")]
    [Description("A download window, repeatable: '[mon,tue,… ]HH:MM-HH:MM[ TIMEZONE]', e.g. 'mon,tue,wed,thu,fri 22:00-06:00 Europe/Amsterdam'.")]
    public string[] Windows { get; init; } = [];

    [CommandOption("--watch")]
    [Description("Follow it with a progress bar per wave until it ends.")]
    public bool Watch { get; init; }

    public override ValidationResult Validate() =>
        StageOnly && (Cdrom || Flash || ReadWrite || NoConnect) ? ValidationResult.Error("--stage-only attaches nothing: leave out --cdrom, --flash, --rw and --no-connect.")
        : !StageOnly && Cdrom == Flash ? ValidationResult.Error("Give --cdrom or --flash.")
        : Cdrom && ReadWrite ? ValidationResult.Error("A CD-ROM is always read-only; use --flash --rw.")
        : !MsdFleet.Protocol.Naming.LabelSelector.TryParse(Selector, out _, out var error) ? ValidationResult.Error(error)
        : ValidationResult.Success();
}

/// <summary><c>msdctl rollout create NAME IMAGE -l SELECTOR --cdrom --waves 1,10%,100% [--watch]</c>.</summary>
public sealed class RolloutCreateCommand : AsyncCommand<RolloutCreateSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, RolloutCreateSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        var body = new JsonObject
        {
            ["name"] = settings.Name,
            ["image"] = settings.Image,
            ["drive"] = settings.Drive,
            ["selector"] = settings.Selector ?? "",
            ["failureThreshold"] = new JsonObject { ["percent"] = settings.FailurePercent, ["minExecuted"] = settings.MinExecuted },
        };
        if (settings.StageOnly)
        {
            body["stageOnly"] = true;
        }
        else
        {
            body["mode"] = settings.Cdrom ? "cdrom" : "flash";
            body["readOnly"] = !settings.ReadWrite;
            body["connect"] = !settings.NoConnect;
        }
        if (settings.SiteBandwidth is { } budget)
            body["siteMaxBytesPerSecond"] = ParseBytes(budget);
        if (settings.PerSite is { } perSite)
            body["maxConcurrentPullsPerSite"] = perSite;
        if (settings.Windows.Length > 0)
            body["downloadWindows"] = new JsonArray(settings.Windows.Select(w => (JsonNode)ParseWindow(w)).ToArray());
        if (settings.Waves is { } waves)
            body["waves"] = new JsonArray(waves.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(w => (JsonNode)w).ToArray());
        if (settings.MaxConcurrent is { } max)
            body["maxConcurrentPulls"] = max;
        if (settings.Timeout is { } timeout)
            body["executionTimeoutSeconds"] = timeout;
        var rollout = (await client.SendJsonAsync(HttpMethod.Post, "api/v1/rollouts", body, cancellationToken))!;
        if (settings.Watch)
            return await RolloutWatchCommand.WatchAsync(client, Output.Str(rollout["id"]), settings.Json, cancellationToken);
        if (settings.Json)
            Output.Json(rollout);
        else
            RolloutShowCommand.Print(rollout);
        return ExitCodes.Ok;
    }

    /// <summary>"10M" → 10485760 (K, M, G are powers of 1024); the server checks the range.</summary>
    internal static long ParseBytes(string text)
    {
        var t = text.Trim().ToUpperInvariant().TrimEnd('B', '/', 'S');
        var (number, factor) = t.Length > 0 && "KMG".Contains(t[^1], StringComparison.Ordinal)
            ? (t[..^1], t[^1] switch { 'K' => 1L << 10, 'M' => 1L << 20, _ => 1L << 30 })
            : (t, 1L);
        return long.TryParse(number, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n) && n > 0
            ? n * factor
            : throw new CliException(ExitCodes.Usage, $"--site-bandwidth '{text}' is not a number of bytes per second (like 50M).");
    }

    /// <summary>"mon,tue 22:00-06:00 Europe/Amsterdam" → {days, start, end, timeZone}; the server checks the values.</summary>
    internal static JsonObject ParseWindow(string text)
    {
        var parts = text.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var at = Array.FindIndex(parts, p => p.Contains('-', StringComparison.Ordinal) && p.Contains(':', StringComparison.Ordinal));
        if (at < 0 || at > 1 || parts.Length > at + 2)
            throw new CliException(ExitCodes.Usage, $"--window '{text}' is not '[DAYS ]HH:MM-HH:MM[ TIMEZONE]'.");
        var times = parts[at].Split('-', 2);
        var window = new JsonObject { ["start"] = times[0], ["end"] = times[1] };
        if (at == 1)
            window["days"] = new JsonArray(parts[0].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(d => (JsonNode)d).ToArray());
        if (parts.Length == at + 2)
            window["timeZone"] = parts[at + 1];
        return window;
    }
}

public sealed class RolloutListCommand : AsyncCommand<GlobalSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, GlobalSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        var rollouts = (await client.GetJsonAsync("api/v1/rollouts", cancellationToken))!.AsArray();
        if (settings.Json)
        {
            Output.Json(rollouts);
            return ExitCodes.Ok;
        }
        var table = new Table().AddColumns("Id", "Name", "State", "Image", "Selector", "Done", "Failed");
        foreach (var r in rollouts)
        {
            var counts = r!["counts"]!;
            var total = counts.AsObject().Sum(c => c.Value!.GetValue<int>());
            table.AddRow(Markup.Escape(Output.Str(r["id"])), Markup.Escape(Output.Str(r["name"])), Markup.Escape(Output.Str(r["state"])),
                Markup.Escape(Output.Str(r["spec"]!["image"])), Markup.Escape(Output.Str(r["spec"]!["selector"])),
                $"{counts["succeeded"]!.GetValue<int>()}/{total}", (counts["failed"]!.GetValue<int>() + counts["timed-out"]!.GetValue<int>()).ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        AnsiConsole.Write(table);
        return ExitCodes.Ok;
    }
}

public class RolloutIdSettings : GlobalSettings
{
    [CommandArgument(0, "<ROLLOUT>")]
    public string Rollout { get; init; } = "";
}

public sealed class RolloutShowCommand : AsyncCommand<RolloutIdSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, RolloutIdSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        var rollout = (await client.GetJsonAsync($"api/v1/rollouts/{Uri.EscapeDataString(settings.Rollout)}", cancellationToken))!;
        if (settings.Json)
            Output.Json(rollout);
        else
            Print(rollout);
        return ExitCodes.Ok;
    }

    internal static void Print(JsonNode rollout)
    {
        AnsiConsole.MarkupLine($"[bold]{Markup.Escape(Output.Str(rollout["name"]))}[/] ({Markup.Escape(Output.Str(rollout["id"]))}): " +
            $"{Markup.Escape(Output.Str(rollout["state"]))}{(rollout["reason"] is { } reason ? " — " + Markup.Escape(Output.Str(reason)) : "")}");
        var spec = rollout["spec"]!;
        AnsiConsole.MarkupLine(Markup.Escape(spec["stageOnly"]?.GetValue<bool>() == true
            ? $"{Output.Str(spec["image"])} staged on agents matching '{Output.Str(spec["selector"])}'"
            : $"{Output.Str(spec["image"])} on drive {spec["drive"]} ({Output.Str(spec["mode"])}) of agents matching '{Output.Str(spec["selector"])}'"));
        var table = new Table().AddColumns("Wave", "Agents", "Queued", "Pulling", "Staged", "Succeeded", "Failed", "Skipped");
        foreach (var w in rollout["waves"]!.AsArray())
        {
            var c = w!["counts"]!;
            table.AddRow($"{w["index"]!.GetValue<int>() + 1}", $"{w["size"]}", $"{c["queued"]}", $"{c["pulling"]}", $"{c["staged"]}", $"{c["succeeded"]}",
                $"{c["failed"]!.GetValue<int>() + c["timed-out"]!.GetValue<int>()}", $"{c["skipped"]}");
        }
        AnsiConsole.Write(table);
        foreach (var f in rollout["failures"]!.AsArray())
            AnsiConsole.MarkupLine($"[red]{Markup.Escape(Output.Str(f!["agentId"]))}[/] {Markup.Escape(Output.Str(f["state"]))}: {Markup.Escape(Output.Str(f["error"]))}");
    }
}

public sealed class RolloutCancelSettings : RolloutIdSettings
{
    [CommandOption("--revert")]
    [Description("Put back what each drive it changed had before.")]
    public bool Revert { get; init; }
}

/// <summary>pause, resume, retry-failed and cancel: one POST each.</summary>
public abstract class RolloutActionCommand(string action) : AsyncCommand<RolloutCancelSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, RolloutCancelSettings settings, CancellationToken cancellationToken)
    {
        if (settings.Revert && action != "cancel")
            throw new CliException(ExitCodes.Usage, "--revert goes with rollout cancel only.");
        using var client = settings.Client();
        var body = action == "cancel" ? new { revert = settings.Revert } : null;
        var rollout = (await client.SendJsonAsync(HttpMethod.Post, $"api/v1/rollouts/{Uri.EscapeDataString(settings.Rollout)}/{action}", body, cancellationToken))!;
        if (settings.Json)
            Output.Json(rollout);
        else
            RolloutShowCommand.Print(rollout);
        return ExitCodes.Ok;
    }
}

public sealed class RolloutPauseCommand() : RolloutActionCommand("pause");
public sealed class RolloutResumeCommand() : RolloutActionCommand("resume");
public sealed class RolloutRetryCommand() : RolloutActionCommand("retry-failed");
public sealed class RolloutCancelCommand() : RolloutActionCommand("cancel");

public sealed class RolloutWatchCommand : AsyncCommand<RolloutIdSettings>
{
    public override Task<int> ExecuteAsync(CommandContext context, RolloutIdSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        return WatchAsync(client, settings.Rollout, settings.Json, cancellationToken);
    }

    /// <summary>
    /// A progress bar per wave until the rollout ends (succeeded, finished, failed, cancelled); exit 0 only when it
    /// succeeded. Polls once a second: a rollout's state is one small GET, and that works through any proxy.
    /// </summary>
    internal static async Task<int> WatchAsync(CoordinatorClient client, string id, bool json, CancellationToken ct)
    {
        var path = $"api/v1/rollouts/{Uri.EscapeDataString(id)}";
        JsonNode rollout = (await client.GetJsonAsync(path, ct))!;
        static bool Ended(JsonNode r) => Output.Str(r["state"]) is "succeeded" or "finished" or "failed" or "cancelled";
        if (json)
        {
            while (!Ended(rollout))
            {
                await Task.Delay(TimeSpan.FromSeconds(1), ct);
                rollout = (await client.GetJsonAsync(path, ct))!;
            }
            Output.Json(rollout);
        }
        else
        {
            await AnsiConsole.Progress().AutoClear(false).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                .StartAsync(async progress =>
                {
                    var bars = rollout["waves"]!.AsArray().Select(w => progress.AddTask($"wave {w!["index"]!.GetValue<int>() + 1} ({w["size"]} agents)", maxValue: w["size"]!.GetValue<int>())).ToList();
                    while (true)
                    {
                        foreach (var (w, bar) in rollout["waves"]!.AsArray().Zip(bars))
                        {
                            var c = w!["counts"]!;
                            var ended = c.AsObject().Where(kv => kv.Key is not ("queued" or "pulling" or "staged")).Sum(kv => kv.Value!.GetValue<int>());
                            var failed = c["failed"]!.GetValue<int>() + c["timed-out"]!.GetValue<int>();
                            bar.Value = ended;
                            bar.Description = $"wave {w["index"]!.GetValue<int>() + 1}: {c["succeeded"]} ok, {c["pulling"]} pulling{(failed > 0 ? $", [red]{failed} failed[/]" : "")}";
                        }
                        if (Ended(rollout))
                            break;
                        await Task.Delay(TimeSpan.FromSeconds(1), ct);
                        rollout = (await client.GetJsonAsync(path, ct))!;
                    }
                });
            RolloutShowCommand.Print(rollout);
        }
        return Output.Str(rollout["state"]) == "succeeded" ? ExitCodes.Ok : ExitCodes.Failure;
    }
}
