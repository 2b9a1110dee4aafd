using MsdFleet.EdgeAgent;
using MsdFleet.EdgeAgent.Enrollment;
using MsdFleet.EdgeAgent.Gadget;

// /etc/msdfleet/agent.json is what `enroll` writes; MSDFLEET_AGENT_CONFIG points elsewhere (several agents on one host, tests).
var configFile = Environment.GetEnvironmentVariable("MSDFLEET_AGENT_CONFIG") is { Length: > 0 } custom ? custom : EnrollCommand.DefaultConfigPath;

if (args is ["enroll", ..])
{
    using var cancel = new CancellationTokenSource();
    Console.CancelKeyPress += (_, e) =>
    {
        e.Cancel = true;
        cancel.Cancel();
    };
    return await EnrollCommand.RunAsync(args[1..], Console.Out, Console.Error, cancel.Token);
}

if (args is ["drive", ..])
{
    var configuration = new ConfigurationBuilder()
        .AddJsonFile(Path.Combine(AppContext.BaseDirectory, "appsettings.json"), optional: true)
        .AddJsonFile(configFile, optional: true)
        .AddEnvironmentVariables()
        .Build();
    var gadget = configuration.GetSection(GadgetOptions.Section).Get<GadgetOptions>() ?? new GadgetOptions();
    return DriveCommand.Run(args[1..], gadget, Console.Out, Console.Error);
}

// The content root is the install folder, not the working directory, and configuration is not watched:
// a recursive watcher over a working directory that holds the image cache turned every write of a pull
// into inotify events for a thread of ours to drain. The agent's config changes by restart (enroll, systemd).
var hostConfiguration = new ConfigurationManager();
hostConfiguration["hostBuilder:reloadConfigOnChange"] = "false";
var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
{
    Args = args,
    ContentRootPath = AppContext.BaseDirectory,
    Configuration = hostConfiguration,
});
builder.Configuration.AddJsonFile(configFile, optional: true).AddEnvironmentVariables().AddCommandLine(args);
builder.Services.AddSystemd();
builder.AddEdgeAgent();
await builder.Build().RunAsync();
return 0;
