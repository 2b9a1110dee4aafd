using MsdFleet.Cli;
using MsdFleet.Cli.Commands;
using Spectre.Console;
using Spectre.Console.Cli;

var app = new CommandApp();
app.Configure(config =>
{
    config.SetApplicationName("msdctl");
    config.PropagateExceptions();
    config.AddCommand<LoginCommand>("login").WithDescription("Store the Coordinator URL and a token (from --token, or minted from --user and a password).")
        .WithExample("login", "--server", "https://fleet.example.net:8443", "--user", "ada", "--ca", "ca.crt");
    config.AddBranch("image", image =>
    {
        image.SetDescription("The image catalog.");
        image.AddCommand<ImageListCommand>("ls").WithDescription("List images.");
        image.AddCommand<ImagePushCommand>("push").WithDescription("Upload an image: chunked here, only chunks the store lacks are sent; re-run to resume.")
            .WithExample("image", "push", "debian-13.iso");
        image.AddCommand<ImagePullCommand>("pull").WithDescription("Download an image (resumes a partial file) and verify its SHA-256.");
        image.AddCommand<ImageRemoveCommand>("rm").WithDescription("Delete an image name.");
    });
    config.AddBranch("agent", agent =>
    {
        agent.SetDescription("The fleet.");
        agent.AddCommand<AgentListCommand>("ls").WithDescription("List agents with their drives (filter with -l SELECTOR, -q TEXT, --state offline,drifted …).");
        agent.AddCommand<AgentShowCommand>("show").WithDescription("One agent in full.");
        agent.AddCommand<AgentLabelCommand>("label").WithDescription("Set (key=value) or remove (key-) an agent's central labels; they override what it reports.")
            .WithExample("agent", "label", "rack1-07", "site=ams1", "rack=r1", "maintenance-");
    });
    config.AddBranch("drive", drive =>
    {
        drive.SetDescription("A drive of an agent.");
        drive.AddCommand<DriveSnapshotCommand>("snapshot").WithDescription("Save what the server wrote to a writable drive as a new image (progress bar; only missing chunks are sent).");
    });
    config.AddBranch("rollout", rollout =>
    {
        rollout.SetDescription("Put an image on many agents: in waves, stopping when too many fail.");
        rollout.AddCommand<RolloutCreateCommand>("create").WithDescription("Start a rollout to the agents a selector matches.")
            .WithExample("rollout", "create", "debian-13", "debian-13.iso", "-l", "site=ams1,!maintenance", "--cdrom", "--waves", "1,10%,100%", "--watch");
        rollout.AddCommand<RolloutListCommand>("ls").WithDescription("List rollouts.");
        rollout.AddCommand<RolloutShowCommand>("show").WithDescription("One rollout: progress per wave and its failures.");
        rollout.AddCommand<RolloutWatchCommand>("watch").WithDescription("Follow a rollout with a progress bar per wave until it ends.");
        rollout.AddCommand<RolloutPauseCommand>("pause").WithDescription("Assign no more agents until resumed.");
        rollout.AddCommand<RolloutResumeCommand>("resume").WithDescription("Carry on after a pause.");
        rollout.AddCommand<RolloutRetryCommand>("retry-failed").WithDescription("Queue the failed agents again (and carry on after the failure threshold stopped it).");
        rollout.AddCommand<RolloutCancelCommand>("cancel").WithDescription("Stop it; --revert puts back what each drive it changed had.");
    });
    config.AddCommand<MountCommand>("mount").WithDescription("Present an image on an agent's drive.")
        .WithExample("mount", "rack1-a", "debian-13.iso", "--cdrom", "--wait");
    config.AddCommand<EjectCommand>("eject").WithDescription("Empty an agent's drive.");
    config.AddCommand<WatchCommand>("watch").WithDescription("Follow live events (agents, images, pull progress).");
});

try
{
    return await app.RunAsync(args);
}
catch (CliException ex)
{
    Output.Error(args, ex.Message, ex.Code);
    return ex.ExitCode;
}
catch (CommandParseException ex)
{
    AnsiConsole.MarkupLineInterpolated($"[red]error:[/] {ex.Message}");
    return ExitCodes.Usage;
}
catch (CommandRuntimeException ex)
{
    AnsiConsole.MarkupLineInterpolated($"[red]error:[/] {ex.Message}");
    return ExitCodes.Usage;
}
catch (OperationCanceledException)
{
    return 130;
}
