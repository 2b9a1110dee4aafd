using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using MsdFleet.FleetSimulator;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.FleetBench;

/// <summary>
/// <c>ramp</c>: how many agents the Coordinator's embedded broker (default config) carries. At each step more agents
/// are enrolled and connected (64 handshakes at a time, each given 10 s); the step records failed connects, the
/// handshake time, how long until the Coordinator counts them online, the broker's own round trip (MQTT PINGREQ
/// from a sample of sessions) and the Coordinator's CPU and RSS with all of them reporting (<c>--sample-seconds</c>, 10). The ramp stops at the
/// first step where a connect fails (a step gives up once 1 % of its connects failed), the Coordinator does not see them all online within 60 s, or a round trip's
/// p99 passes 1 s; the last step before it is the limit.
/// </summary>
public static class BrokerRamp
{
    public static async Task<int> RunAsync(Arguments args, CancellationToken ct)
    {
        using var api = new CoordinatorApi(args.Uri("coordinator"), args.Text("admin-token"));
        var broker = args.Uri("broker");
        var sampler = new ProcessSampler(args.Number("coordinator-pid"));
        var steps = args.Text("steps", "1000,2000,5000,10000,15000").Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToList();
        var topics = new TopicNames(args.Text("topic-prefix", TopicNames.DefaultPrefix));
        var sampleSeconds = args.Number("sample-seconds", 10);
        var key = ECDsa.Create();
        key.ImportSubjectPublicKeyInfo(Convert.FromBase64String((await api.GetAsync("api/v1/signing-key", ct))["publicKey"]!.GetValue<string>()), out _);

        var connected = new List<SimulatedAgent>();
        var limit = 0;
        string? reason = null;
        Console.WriteLine(F($"  agents  failed  connect p50/p99 ms  all online after  PINGREQ p50/p99 ms  coordinator ({sampleSeconds} s, reporting)"));
        try
        {
            foreach (var target in steps)
            {
                var fresh = await Enrollment.EnrollAsync(api, "ramp", connected.Count, target - connected.Count, "ramp", ct);
                var agents = fresh.Select(a => new SimulatedAgent(a.Id, a.Secret, broker, topics, key)).ToList();
                var handshakes = new ConcurrentBag<double>();
                var failed = new ConcurrentBag<string>();
                // Past the limit every connect waits its full 10 s: once 1 % have failed, the step is over (the rest are not tried).
                using var giveUp = CancellationTokenSource.CreateLinkedTokenSource(ct);
                var tolerated = Math.Max(10, agents.Count / 100);
                try
                {
                    await Parallel.ForEachAsync(agents, new ParallelOptions { MaxDegreeOfParallelism = 64, CancellationToken = giveUp.Token }, async (agent, c) =>
                    {
                        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(c);
                        timeout.CancelAfter(TimeSpan.FromSeconds(10));
                        var clock = Stopwatch.StartNew();
                        try
                        {
                            await agent.ConnectAsync(timeout.Token);
                            handshakes.Add(clock.Elapsed.TotalMilliseconds);
                        }
                        catch (Exception ex) when (!c.IsCancellationRequested)
                        {
                            agent.Vanish();
                            failed.Add($"{agent.Id}: {ex.GetType().Name} {ex.Message}");
                            if (failed.Count >= tolerated)
                                await giveUp.CancelAsync();
                        }
                    });
                }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                }
                foreach (var agent in agents.Where(a => !a.IsConnected))
                    agent.Vanish(); // not tried, or cancelled mid-handshake
                connected.AddRange(agents.Where(a => a.IsConnected));
                var online = Stopwatch.StartNew();
                var allOnline = true;
                try
                {
                    await FleetRun.WaitAsync(async () => await api.OnlineAsync(ct) >= connected.Count, TimeSpan.FromSeconds(60), "", ct);
                }
                catch (BenchException)
                {
                    allOnline = false;
                }
                var onlineSeconds = online.Elapsed.TotalSeconds;
                var pings = new ConcurrentBag<double>();
                var sample = connected.Where((_, i) => i % Math.Max(1, connected.Count / 500) == 0).ToList();
                await Parallel.ForEachAsync(sample, new ParallelOptions { MaxDegreeOfParallelism = 50, CancellationToken = ct }, async (agent, c) =>
                {
                    var clock = Stopwatch.StartNew();
                    try
                    {
                        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(c);
                        timeout.CancelAfter(TimeSpan.FromSeconds(10));
                        await agent.PingBrokerAsync(timeout.Token);
                        pings.Add(clock.Elapsed.TotalMilliseconds);
                    }
                    catch (Exception) when (!c.IsCancellationRequested)
                    {
                        pings.Add(double.PositiveInfinity);
                    }
                });
                ProcessSampler.Window window;
                await using (new ReportPacer(connected, TimeSpan.FromSeconds(30)))
                {
                    var running = sampler.Start();
                    await Task.Delay(TimeSpan.FromSeconds(sampleSeconds), ct);
                    window = await running.StopAsync();
                }
                var (c50, c99) = Percentiles(handshakes);
                var (p50, p99) = Percentiles(pings);
                var tried = handshakes.Count + failed.Count;
                Console.WriteLine(F($"  {target,6}  {failed.Count,6}  {c50,8:F0} / {c99,-8:F0}  {(allOnline ? onlineSeconds.ToString("F1", CultureInfo.InvariantCulture) + " s" : "NOT in 60 s"),15}  {p50,8:F1} / {p99,-8:F1}  {window}"));
                if (tried < agents.Count)
                    Console.WriteLine(F($"          gave up after {failed.Count} failed of {tried} tried; {agents.Count - tried} not tried"));
                foreach (var f in failed.Take(3))
                    Console.WriteLine($"          e.g. {f}");
                if (args.Optional("results") is { } results)
                    await File.AppendAllTextAsync(results, F($"ramp {target} {failed.Count} {c50:F0} {c99:F0} {(allOnline ? onlineSeconds.ToString("F1", CultureInfo.InvariantCulture) : "-")} {p50:F1} {p99:F1} {window.CpuPercentOfOneCore:F1} {window.PeakRssMb:F0}\n"), ct);
                reason = !failed.IsEmpty ? $"{failed.Count} of {tried} new connects tried failed (10 s each) at {target}"
                    : !allOnline ? $"the Coordinator did not count {target} online within 60 s"
                    : p99 > 1000 ? $"the broker round trip p99 was {p99:F0} ms at {target}"
                    : null;
                if (reason is not null)
                    break;
                limit = target;
            }
        }
        finally
        {
            // Dropped, not disconnected cleanly: a clean goodbye is a retained publish each, which this broker writes to disk
            // one whole file at a time — minutes at the limit — and the Coordinator is stopped next anyway.
            foreach (var agent in connected)
                agent.Vanish();
        }
        Console.WriteLine(reason is null
            ? $"  embedded broker: no limit reached up to {limit} agents (the last step asked)"
            : $"  embedded broker limit: {limit} agents ({reason})");
        if (args.Optional("results") is { } file)
            await File.AppendAllTextAsync(file, $"limit {limit} {(reason ?? "none reached").Replace(' ', '_')}\n", ct);
        return 0;
    }

    private static (double P50, double P99) Percentiles(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        if (sorted.Count == 0)
            return (double.NaN, double.NaN);
        return (sorted[(int)(sorted.Count * 0.50)], sorted[Math.Min(sorted.Count - 1, (int)(sorted.Count * 0.99))]);
    }

    private static string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
