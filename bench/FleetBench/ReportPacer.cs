using MsdFleet.FleetSimulator;

namespace MsdFleet.FleetBench;

/// <summary>
/// Makes the simulated fleet report like real agents when nothing changes: each agent once every
/// <c>interval</c> (the agent's <c>Agent:ReportInterval</c>, 30 s by default), spread evenly over it, so the
/// Coordinator's "idle" is a fleet of N that keeps reporting, not a silent one.
/// </summary>
public sealed class ReportPacer : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;

    public ReportPacer(IReadOnlyList<SimulatedAgent> agents, TimeSpan interval)
    {
        var tick = TimeSpan.FromMilliseconds(100);
        var perTick = agents.Count * tick.TotalMilliseconds / interval.TotalMilliseconds;
        _loop = Task.Run(async () =>
        {
            using var timer = new PeriodicTimer(tick);
            var next = 0;
            var owed = 0.0;
            try
            {
                while (await timer.WaitForNextTickAsync(_stop.Token))
                {
                    owed += perTick;
                    for (; owed >= 1; owed--, next = (next + 1) % agents.Count)
                        agents[next].RequestReport();
                }
            }
            catch (OperationCanceledException)
            {
            }
        });
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _loop;
        _stop.Dispose();
    }
}
