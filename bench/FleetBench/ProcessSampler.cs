using System.Diagnostics;
using System.Globalization;

namespace MsdFleet.FleetBench;

/// <summary>
/// CPU and memory of another process (the Coordinator), read from <c>/proc/PID/stat</c> (utime + stime, in clock
/// ticks) and <c>/proc/PID/status</c> (VmRSS), so what is measured is what the kernel accounts, not what the process says.
/// A window: <see cref="StartAsync"/> … <see cref="StopAsync"/> gives the CPU used over it (% of one core) and the
/// mean and peak RSS sampled every second.
/// </summary>
public sealed class ProcessSampler
{
    private readonly int _pid;
    private static readonly double TicksPerSecond = double.Parse(Environment.GetEnvironmentVariable("CLK_TCK") ?? "100", CultureInfo.InvariantCulture);

    public ProcessSampler(int pid) => _pid = pid;

    public sealed record Window(double Seconds, double CpuPercentOfOneCore, double MeanRssMb, double PeakRssMb)
    {
        public override string ToString() =>
            string.Create(CultureInfo.InvariantCulture, $"CPU {CpuPercentOfOneCore,5:F1} % of a core, RSS mean {MeanRssMb,4:F0} MB peak {PeakRssMb,4:F0} MB (over {Seconds:F1} s)");
    }

    public long CpuTicks()
    {
        var stat = File.ReadAllText($"/proc/{_pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        return long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
    }

    public double RssMb()
    {
        foreach (var line in File.ReadLines($"/proc/{_pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0;
        }
        throw new BenchException($"/proc/{_pid}/status has no VmRSS: the process is gone?");
    }

    public Running Start() => new(this);

    /// <summary>A window being sampled.</summary>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "StopAsync disposes it; a window is always stopped.")]
    public sealed class Running
    {
        private readonly ProcessSampler _sampler;
        private readonly long _startTicks;
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private readonly List<double> _rss = [];
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _loop;

        internal Running(ProcessSampler sampler)
        {
            _sampler = sampler;
            _startTicks = sampler.CpuTicks();
            _rss.Add(sampler.RssMb());
            _loop = Task.Run(async () =>
            {
                using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
                try
                {
                    while (await timer.WaitForNextTickAsync(_stop.Token))
                    {
                        lock (_rss)
                            _rss.Add(_sampler.RssMb());
                    }
                }
                catch (OperationCanceledException)
                {
                }
            });
        }

        public async Task<Window> StopAsync()
        {
            var ticks = _sampler.CpuTicks() - _startTicks;
            var seconds = _clock.Elapsed.TotalSeconds;
            await _stop.CancelAsync();
            await _loop;
            _stop.Dispose();
            lock (_rss)
            {
                _rss.Add(_sampler.RssMb());
                return new Window(seconds, ticks / TicksPerSecond / seconds * 100, _rss.Average(), _rss.Max());
            }
        }
    }
}
