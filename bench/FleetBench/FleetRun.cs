using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using MsdFleet.FleetSimulator;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.FleetBench;

/// <summary>
/// <c>run</c>: N enrolled agents against a Coordinator on an external broker. Connects them all (each with the image
/// cached), then in order: the raw MQTT round trip to the same N sessions (<see cref="RawRoundTrip"/>), the
/// Coordinator's CPU and RSS while idle with N agents connected and reporting, and a rollout to all N (one wave,
/// 100 %, no concurrency cap) timed until every agent has reported the image attached — with the Coordinator's CPU
/// and RSS over it. Prints each figure and appends one result line for bench/fleet.sh's table.
/// </summary>
public static class FleetRun
{
    private static readonly string[] OneWave = ["100%"];

    public static async Task<int> RunAsync(Arguments args, CancellationToken ct)
    {
        using var api = new CoordinatorApi(args.Uri("coordinator"), args.Text("admin-token"));
        var broker = args.Uri("broker");
        var agents = await Enrollment.ReadAsync(args.Text("agents"));
        var n = agents.Count;
        var sampler = new ProcessSampler(args.Number("coordinator-pid"));
        var idleSeconds = args.Number("idle-seconds", 20);
        var rolloutTimeout = TimeSpan.FromSeconds(args.Number("rollout-timeout", 600));
        var topics = new TopicNames(args.Text("topic-prefix", TopicNames.DefaultPrefix));

        var key = ECDsa.Create();
        key.ImportSubjectPublicKeyInfo(Convert.FromBase64String((await api.GetAsync("api/v1/signing-key", ct))["publicKey"]!.GetValue<string>()), out _);
        var image = new byte[256 * 1024];
        Random.Shared.NextBytes(image);
        var imageName = $"fleet-{n}.iso";
        var digest = await api.UploadImageAsync(imageName, image, ct);

        await using var fleet = new SimulatedFleet(agents.Select(a => (a.Id, a.Secret, (IReadOnlyDictionary<string, string>?)null)), broker, topics, key);
        foreach (var agent in fleet.Agents)
            agent.Cache(digest);
        var clock = Stopwatch.StartNew();
        await fleet.ConnectAsync(64, ct);
        Console.WriteLine(F($"  {n} simulated agents connected to {broker} in {clock.Elapsed.TotalSeconds:F1} s"));
        clock.Restart();
        await WaitAsync(async () => await api.OnlineAsync(ct) >= n, TimeSpan.FromSeconds(120), $"the Coordinator to count {n} agents online", ct);
        Console.WriteLine(F($"  the Coordinator counted all {n} online {clock.Elapsed.TotalSeconds:F1} s later"));
        await using var pacer = new ReportPacer(fleet.Agents, TimeSpan.FromSeconds(30));

        // 1. The raw round trip, three rounds; the median is the reference.
        var raw = new List<double>();
        await using (var probe = await RawRoundTrip.ConnectAsync(broker, args.Text("broker-user"), args.Text("broker-password"), topics,
            agents.Select(a => a.Id).ToList(), ct))
        {
            for (var round = 1; round <= 3; round++)
            {
                var (elapsed, answered) = await probe.RoundAsync(round, TimeSpan.FromSeconds(60), ct);
                if (elapsed is null)
                    throw new BenchException($"raw round trip {round}: only {answered} of {n} agents answered within 60 s");
                raw.Add(elapsed.Value.TotalMilliseconds);
                Console.WriteLine(F($"  raw MQTT round trip {round}: {elapsed.Value.TotalMilliseconds,8:F0} ms to all {n} (QoS 1, {probe.Window} in flight)"));
            }
        }
        var rawMs = raw.Order().ElementAt(1);

        // 2. Idle: connected and reporting every 30 s, nothing rolling out.
        var idleWindow = sampler.Start();
        await Task.Delay(TimeSpan.FromSeconds(idleSeconds), ct);
        var idle = await idleWindow.StopAsync();
        Console.WriteLine($"  coordinator idle:    {idle}");

        // 3. The rollout, timed from the request until the last agent reported the image attached.
        var attached = new ConcurrentDictionary<string, long>(StringComparer.Ordinal);
        var all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var received = Stopwatch.StartNew();
        foreach (var agent in fleet.Agents)
        {
            agent.Reported += (a, report) =>
            {
                if (report.Drives.Any(d => d.Index == 0 && d.ImageDigest == digest && d.Connected)
                    && attached.TryAdd(a.Id, received.ElapsedTicks) && attached.Count == n)
                    all.TrySetResult();
            };
        }
        var during = sampler.Start();
        clock.Restart();
        received.Restart();
        var created = await api.PostAsync("api/v1/rollouts", new { name = $"bench {n}", image = imageName, mode = "cdrom", selector = $"{Enrollment.Label}=fleet", waves = OneWave }, ct);
        var postMs = clock.Elapsed.TotalMilliseconds;
        var id = created["id"]!.GetValue<string>();
        Console.WriteLine(F($"  rollout {id} created in {postMs:F0} ms"));
        // The Coordinator's own view, polled each second (coarse; the figure is the agents' reports).
        double? coordinatorMs = null;
        string coordinatorState = "running";
        using var pollStop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var poll = Task.Run(async () =>
        {
            while (!pollStop.IsCancellationRequested)
            {
                try
                {
                    var view = await api.GetAsync($"api/v1/rollouts/{id}", pollStop.Token);
                    coordinatorState = view["state"]!.GetValue<string>();
                    if (coordinatorState is "succeeded" or "failed" or "finished")
                    {
                        coordinatorMs = clock.Elapsed.TotalMilliseconds;
                        return;
                    }
                    await Task.Delay(1000, pollStop.Token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }, CancellationToken.None);
        var progress = Task.Run(async () =>
        {
            while (!all.Task.IsCompleted)
            {
                await Task.WhenAny(all.Task, Task.Delay(10_000, ct));
                if (!all.Task.IsCompleted)
                    Console.WriteLine(F($"    … {clock.Elapsed.TotalSeconds,5:F0} s: {attached.Count} of {n} attached"));
            }
        }, CancellationToken.None);
        var finished = await Task.WhenAny(all.Task, Task.Delay(rolloutTimeout, ct)) == all.Task;
        var rolloutMs = clock.Elapsed.TotalMilliseconds;
        // The Coordinator records each execution's end after the agents attached (a transaction each): wait for its verdict too.
        await Task.WhenAny(poll, Task.Delay(finished ? TimeSpan.FromSeconds(args.Number("verdict-timeout", 300)) : TimeSpan.Zero, ct));
        await pollStop.CancelAsync();
        await poll;
        var busy = await during.StopAsync();
        all.TrySetResult();
        await progress;

        var times = attached.Values.Order().Select(t => t * 1000.0 / Stopwatch.Frequency).ToList();
        var first = times.Count > 0 ? times[0] : double.NaN;
        var last = times.Count > 0 ? times[^1] : double.NaN;
        var perAssignment = times.Count > 1 ? (last - first) / (times.Count - 1) : double.NaN;
        Console.WriteLine(finished
            ? F($"  rollout to {n}:      {rolloutMs,8:F0} ms until all reported attached ({(coordinatorMs is { } c ? $"the Coordinator said {coordinatorState} at {c:F0} ms" : $"the Coordinator still said {coordinatorState} at {clock.Elapsed.TotalMilliseconds:F0} ms")})")
            : F($"  rollout to {n}:      NOT DONE after {rolloutMs / 1000:F0} s: {attached.Count} of {n} attached (Coordinator: {coordinatorState})"));
        Console.WriteLine(F($"  first agent attached {first:F0} ms after the request, the last {last:F0} ms: {perAssignment:F2} ms per agent ({(times.Count - 1) / ((last - first) / 1000):F0} agents/s)"));
        Console.WriteLine($"  coordinator rollout: {busy}");
        var ratio = finished ? rolloutMs / rawMs : double.NaN;
        Console.WriteLine(F($"  ratio: rollout / raw = {ratio:F1} x (goal <= 1.5 x)"));

        if (args.Optional("results") is { } results)
        {
            await File.AppendAllTextAsync(results, F($"fleet {n} {rawMs:F0} {(finished ? rolloutMs.ToString("F0", CultureInfo.InvariantCulture) : "-")} {ratio:F1} {perAssignment:F2} {postMs:F0} {idle.CpuPercentOfOneCore:F1} {idle.PeakRssMb:F0} {busy.CpuPercentOfOneCore:F1} {busy.PeakRssMb:F0} {attached.Count} {(coordinatorMs is { } v ? v.ToString("F0", CultureInfo.InvariantCulture) : "-")}\n"), ct);
        }
        return finished ? 0 : 1;
    }

    internal static async Task WaitAsync(Func<Task<bool>> condition, TimeSpan timeout, string what, CancellationToken ct)
    {
        var deadline = Stopwatch.StartNew();
        while (!await condition())
        {
            if (deadline.Elapsed > timeout)
                throw new BenchException($"timed out after {timeout.TotalSeconds:F0} s waiting for {what}");
            await Task.Delay(200, ct);
        }
    }

    private static string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
