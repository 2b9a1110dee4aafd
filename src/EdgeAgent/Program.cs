using MsdFleet.EdgeAgent;
using MsdFleet.EdgeAgent.Gadget;

if (args is ["drive", ..])
{
    var configuration = new ConfigurationBuilder()
        .AddJsonFile(Path.Combine(AppContext.BaseDirectory, "appsettings.json"), optional: true)
        .AddJsonFile("/etc/msdfleet/agent.json", optional: true)
        .AddEnvironmentVariables()
        .Build();
    var gadget = configuration.GetSection(GadgetOptions.Section).Get<GadgetOptions>() ?? new GadgetOptions();
    return DriveCommand.Run(args[1..], gadget, Console.Out, Console.Error);
}

var builder = Host.CreateApplicationBuilder(args);
builder.Configuration.AddJsonFile("/etc/msdfleet/agent.json", optional: true).AddEnvironmentVariables().AddCommandLine(args);
builder.Services.AddSystemd();
builder.AddEdgeAgent();
await builder.Build().RunAsync();
return 0;
