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

var builder = Host.CreateApplicationBuilder(args);
builder.Configuration.AddJsonFile(configFile, optional: true).AddEnvironmentVariables().AddCommandLine(args);
builder.Services.AddSystemd();
builder.AddEdgeAgent();
await builder.Build().RunAsync();
return 0;
