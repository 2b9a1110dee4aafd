namespace MsdFleet.Coordinator.Storage;

/// <summary>
/// Keeps garbage collection and writers apart: uploads and imports hold a shared lease for their whole
/// run (they dedup against chunks GC might otherwise delete), GC holds the exclusive one. Writer-preferring:
/// once GC waits, new uploads wait behind it, so GC is never starved. In-process only — with several
/// Coordinator replicas, run GC on one of them.
/// </summary>
public sealed class StoreGate : IDisposable
{
    private readonly SemaphoreSlim _turnstile = new(1, 1);
    private readonly SemaphoreSlim _exclusive = new(1, 1);
    private readonly Lock _lock = new();
    private int _readers;
    private int _exclusiveWaiting;

    /// <summary>Uploads, imports and push commits holding the store right now.</summary>
    public int SharedHolders
    {
        get
        {
            lock (_lock)
                return _readers;
        }
    }

    /// <summary>True while a GC has passed the turnstile and waits for the shared holders to finish.</summary>
    public bool ExclusiveWaiting => Volatile.Read(ref _exclusiveWaiting) > 0;

    public async Task<IAsyncDisposable> EnterSharedAsync(CancellationToken cancellationToken)
    {
        await _turnstile.WaitAsync(cancellationToken);
        try
        {
            var first = false;
            lock (_lock)
                first = ++_readers == 1;
            if (first)
            {
                try
                {
                    await _exclusive.WaitAsync(cancellationToken);
                }
                catch
                {
                    lock (_lock)
                        _readers--;
                    throw;
                }
            }
        }
        finally
        {
            _turnstile.Release();
        }
        return new Lease(() =>
        {
            lock (_lock)
            {
                if (--_readers == 0)
                    _exclusive.Release();
            }
        });
    }

    public async Task<IAsyncDisposable> EnterExclusiveAsync(CancellationToken cancellationToken)
    {
        await _turnstile.WaitAsync(cancellationToken);
        Interlocked.Increment(ref _exclusiveWaiting);
        try
        {
            await _exclusive.WaitAsync(cancellationToken);
        }
        catch
        {
            _turnstile.Release();
            throw;
        }
        finally
        {
            Interlocked.Decrement(ref _exclusiveWaiting);
        }
        return new Lease(() =>
        {
            _exclusive.Release();
            _turnstile.Release();
        });
    }

    public void Dispose()
    {
        _turnstile.Dispose();
        _exclusive.Dispose();
    }

    private sealed class Lease(Action release) : IAsyncDisposable
    {
        private int _released;

        public ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0)
                release();
            return ValueTask.CompletedTask;
        }
    }
}
