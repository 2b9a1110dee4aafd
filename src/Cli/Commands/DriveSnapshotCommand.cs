using System.ComponentModel;
using System.Text.Json.Nodes;
using Spectre.Console;
using Spectre.Console.Cli;

namespace MsdFleet.Cli.Commands;

public sealed class DriveSnapshotSettings : GlobalSettings
{
    [CommandArgument(0, "<AGENT>")]
    public string Agent { get; init; } = "";

    [CommandArgument(1, "<NAME>")]
    [Description("Catalog name for the saved image.")]
    public string Name { get; init; } = "";

    [CommandOption("--drive <N>")]
    [DefaultValue(0)]
    public int Drive { get; init; }

    [CommandOption("--no-wait")]
    [Description("Return once the agent was asked, without following the snapshot.")]
    public bool NoWait { get; init; }

    [CommandOption("--timeout <SECONDS>")]
    [DefaultValue(3600)]
    public int Timeout { get; init; }
}

/// <summary>
/// <c>msdctl drive snapshot AGENT NAME [--drive N]</c>: saves what the server wrote to a writable drive as
/// a new catalog image, and follows it with a progress bar (the agent cuts the drive's copy, then sends
/// only the chunks the catalog lacks). Fails with the agent's own sentence — e.g. while the server still
/// has the drive mounted.
/// </summary>
public sealed class DriveSnapshotCommand : AsyncCommand<DriveSnapshotSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, DriveSnapshotSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        var path = $"api/v1/agents/{Uri.EscapeDataString(settings.Agent)}/drives/{settings.Drive}/snapshot";
        var accepted = (await client.SendJsonAsync(HttpMethod.Post, path, new { name = settings.Name }, cancellationToken))!;
        var id = accepted["snapshotId"]!.GetValue<string>();
        if (settings.NoWait)
        {
            if (settings.Json)
                Output.Json(accepted);
            else
                AnsiConsole.MarkupLineInterpolated($"Asked [bold]{settings.Agent}[/] to save drive {settings.Drive} as [bold]{settings.Name}[/] (snapshot {id}).");
            return ExitCodes.Ok;
        }
        var deadline = DateTime.UtcNow.AddSeconds(settings.Timeout);
        async Task<JsonNode> FollowAsync(ProgressTask? bar)
        {
            while (true)
            {
                var status = (await client.GetJsonAsync(path, cancellationToken))!;
                var reported = status["reported"];
                if (reported is not null && Output.Str(reported["id"]) == id)
                {
                    var total = Math.Max(1, reported["bytesTotal"]!.GetValue<long>());
                    if (bar is not null)
                    {
                        bar.MaxValue = total;
                        bar.Value = reported["bytesDone"]!.GetValue<long>();
                        bar.Description = $"saving drive {settings.Drive} · sent {Output.Bytes(reported["bytesSent"]!.GetValue<long>())}";
                    }
                    switch (Output.Str(reported["state"]))
                    {
                        case "succeeded":
                            bar?.Value(total);
                            return reported;
                        case "failed":
                            throw new CliException(ExitCodes.Failure, $"{settings.Agent}: {Output.Str(reported["error"])}");
                    }
                }
                if (DateTime.UtcNow > deadline)
                    throw new CliException(ExitCodes.Failure, $"{settings.Agent} did not finish the snapshot within {settings.Timeout} s (is it online?).");
                await Task.Delay(500, cancellationToken);
            }
        }
        JsonNode done;
        if (!settings.Json && !Console.IsOutputRedirected)
        {
            done = null!;
            await AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new SpinnerColumn())
                .StartAsync(async ctx => done = await FollowAsync(ctx.AddTask($"saving drive {settings.Drive}", maxValue: 1)));
        }
        else
        {
            done = await FollowAsync(null);
        }
        if (settings.Json)
            Output.Json(new { agent = settings.Agent, drive = settings.Drive, snapshotId = id, name = settings.Name, digest = Output.Str(done["digest"]),
                bytesTotal = done["bytesTotal"]!.GetValue<long>(), bytesSent = done["bytesSent"]!.GetValue<long>() });
        else
            AnsiConsole.MarkupLineInterpolated($"Saved [bold]{settings.Agent}[/] drive {settings.Drive} as [bold]{settings.Name}[/] ({Output.Str(done["digest"])}): {Output.Bytes(done["bytesSent"]!.GetValue<long>())} of {Output.Bytes(done["bytesTotal"]!.GetValue<long>())} sent.");
        return ExitCodes.Ok;
    }
}
