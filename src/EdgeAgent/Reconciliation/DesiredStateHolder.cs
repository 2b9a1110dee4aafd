using MsdFleet.EdgeAgent.Storage;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Reconciliation;

/// <summary>
/// The last accepted desired state, kept on disk so the agent converges after a reboot even while the
/// broker is unreachable. Older or equal generations are refused, so a replayed message cannot roll
/// a drive back. Wakes the reconcile loop on every change.
/// </summary>
public sealed class DesiredStateHolder : IDisposable
{
    private readonly LocalImageStore _store;
    private readonly SemaphoreSlim _changed = new(0, 1);
    private readonly Lock _lock = new();

    public DesiredStateHolder(LocalImageStore store)
    {
        _store = store;
        Current = store.LoadDesired();
    }

    public DesiredState? Current { get; private set; }

    /// <summary>Why the last refused desired state was refused; cleared when a valid new one arrives.</summary>
    public string? LastRejection { get; private set; }

    public void Reject(string reason)
    {
        LastRejection = reason;
        Poke();
    }

    public void Dispose() => _changed.Dispose();

    public enum OfferResult { Accepted, Duplicate, Stale }

    public async Task<OfferResult> OfferAsync(DesiredState state, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(state);
        lock (_lock)
        {
            if (Current is { } current)
            {
                if (state.Generation == current.Generation)
                    return OfferResult.Duplicate;
                if (state.Generation < current.Generation)
                    return OfferResult.Stale;
            }
            Current = state;
            LastRejection = null;
        }
        await _store.SaveDesiredAsync(state, cancellationToken);
        Poke();
        return OfferResult.Accepted;
    }

    /// <summary>Wakes the reconcile loop (new desired state, a finished pull, a reconnect).</summary>
    public void Poke()
    {
        try
        {
            _changed.Release();
        }
        catch (SemaphoreFullException)
        {
            // already signalled
        }
    }

    public async Task WaitForChangeAsync(TimeSpan timeout, CancellationToken cancellationToken) =>
        await _changed.WaitAsync(timeout, cancellationToken);
}
