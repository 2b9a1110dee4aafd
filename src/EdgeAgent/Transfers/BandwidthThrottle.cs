namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>
/// A token bucket shared by every request of a pull, so that the configured cap holds for the agent
/// as a whole and a site link is not saturated. A rate of 0 means unlimited.
/// </summary>
public sealed class BandwidthThrottle(long bytesPerSecond, TimeProvider time)
{
    /// <summary>Bytes per second; changeable while pulls run (desired state may override the configured cap).</summary>
    public long BytesPerSecond { get; set; } = bytesPerSecond;

    private readonly Lock _lock = new();
    private long _nextFreeTicks;

    public async ValueTask WaitAsync(int bytes, CancellationToken cancellationToken)
    {
        var rate = BytesPerSecond;
        if (rate <= 0)
            return;
        TimeSpan delay;
        lock (_lock)
        {
            var now = time.GetTimestamp();
            var cost = (long)(bytes * (double)time.TimestampFrequency / rate);
            // Allow a burst of up to 100 ms so small reads are not delayed one by one.
            var floor = now - time.TimestampFrequency / 10;
            _nextFreeTicks = Math.Max(_nextFreeTicks, floor) + cost;
            delay = _nextFreeTicks > now ? TimeSpan.FromSeconds((_nextFreeTicks - now) / (double)time.TimestampFrequency) : TimeSpan.Zero;
        }
        if (delay > TimeSpan.FromMilliseconds(1))
            await Task.Delay(delay, time, cancellationToken);
    }
}
