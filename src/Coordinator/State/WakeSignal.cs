using System.Threading.Channels;

namespace MsdFleet.Coordinator.State;

/// <summary>
/// A background loop's doorbell: <see cref="Wake"/> from anywhere (coalesced — many rings before the loop looks
/// are one), <see cref="WaitAsync"/> in the loop until rung or <c>timeout</c> passed, whichever comes first.
/// </summary>
public sealed class WakeSignal
{
    private readonly Channel<bool> _channel = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });

    public void Wake() => _channel.Writer.TryWrite(true);

    /// <summary>Returns when woken or after <paramref name="timeout"/>; throws only when <paramref name="stopping"/> is cancelled.</summary>
    public async Task WaitAsync(TimeSpan timeout, CancellationToken stopping)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        limit.CancelAfter(timeout);
        try
        {
            await _channel.Reader.ReadAsync(limit.Token);
        }
        catch (OperationCanceledException) when (!stopping.IsCancellationRequested)
        {
        }
    }
}
