using System.Collections.Concurrent;

namespace MsdFleet.EdgeAgent.Tests.Gadget.Kvmd;

/// <summary>The system clock, remembering every timer asked of it: shows which delays went through the TimeProvider.</summary>
public sealed class RecordingTimeProvider : TimeProvider
{
    public ConcurrentQueue<TimeSpan> Timers { get; } = new();

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        Timers.Enqueue(dueTime);
        return base.CreateTimer(callback, state, dueTime, period);
    }
}
