using MsdFleet.FleetBench;

// The fleet simulator's command-line host; bench/fleet.sh drives it. Commands:
//   enroll --coordinator URL --admin-token T --count N --out FILE
//       N agents through fleet enrollment tokens (label bench=fleet); "id secret" lines to FILE.
//   (all: [--topic-prefix P] when the Coordinator's Mqtt:TopicPrefix is not the default)
//   run --coordinator URL --admin-token T --broker mqtt://H:P --broker-user U --broker-password P --agents FILE
//       --coordinator-pid PID [--idle-seconds 20] [--rollout-timeout 600] [--results FILE]
//       raw MQTT round trip vs a rollout to the same N agents; the Coordinator's CPU and RSS idle and during it.
//   ramp --coordinator URL --admin-token T --broker mqtt://H:P --coordinator-pid PID [--steps 1000,2000,…] [--sample-seconds 10] [--results FILE]
//       the embedded broker's limit.
using var stop = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    stop.Cancel();
};
try
{
    var options = new Arguments(args.Skip(1));
    return args.FirstOrDefault() switch
    {
        "enroll" => await EnrollAsync(options, stop.Token),
        "run" => await FleetRun.RunAsync(options, stop.Token),
        "ramp" => await BrokerRamp.RunAsync(options, stop.Token),
        _ => Usage(),
    };
}
catch (BenchException ex)
{
    Console.Error.WriteLine($"fleetbench: {ex.Message}");
    return 2;
}
catch (HttpRequestException ex)
{
    Console.Error.WriteLine($"fleetbench: the Coordinator did not answer: {ex.Message}");
    return 2;
}

static async Task<int> EnrollAsync(Arguments options, CancellationToken ct)
{
    using var api = new CoordinatorApi(options.Uri("coordinator"), options.Text("admin-token"));
    var agents = await Enrollment.EnrollAsync(api, options.Text("prefix", "bench"), 0, options.Number("count"), "fleet", ct);
    await Enrollment.WriteAsync(options.Text("out"), agents);
    return 0;
}

static int Usage()
{
    Console.Error.WriteLine("usage: fleetbench enroll|run|ramp --name value … (see bench/FleetBench/Program.cs)");
    return 2;
}
