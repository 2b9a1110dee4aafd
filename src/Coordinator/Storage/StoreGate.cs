namespace MsdFleet.Coordinator.Storage;

/// <summary>
/// Keeps garbage collection and writers apart: uploads and imports hold a shared lease for their whole
/// run (they dedup against chunks GC might otherwise delete), GC holds the exclusive one. Writer-preferring:
/// once GC waits, new uploads wait behind it, so GC is never starved. With several replicas on PostgreSQL
/// the same lease is also taken between them (an advisory lock, see <see cref="AcrossReplicasAsync"/>), so the
/// leader's GC waits for every replica's uploads, and PostgreSQL's lock queue keeps it writer-preferring.
/// </summary>
public sealed class StoreGate(State.StateDatabase db) : IDisposable
{
    /// <summary>The PostgreSQL advisory-lock key of the gate between replicas (any fixed number; "msdgate").</summary>
    private const long GateLockKey = 0x6d73_6467_6174_65;

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
        void ReleaseLocal()
        {
            lock (_lock)
            {
                if (--_readers == 0)
                    _exclusive.Release();
            }
        }
        try
        {
            var across = await AcrossReplicasAsync("pg_advisory_lock_shared", "pg_advisory_unlock_shared", cancellationToken);
            return new Lease(ReleaseLocal, across);
        }
        catch
        {
            ReleaseLocal();
            throw;
        }
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
        void ReleaseLocal()
        {
            _exclusive.Release();
            _turnstile.Release();
        }
        try
        {
            var across = await AcrossReplicasAsync("pg_advisory_lock", "pg_advisory_unlock", cancellationToken);
            return new Lease(ReleaseLocal, across);
        }
        catch
        {
            ReleaseLocal();
            throw;
        }
    }

    /// <summary>
    /// On PostgreSQL the same lock is taken between replicas: a session advisory lock on a connection held
    /// for the lease's lifetime (shared for uploads, exclusive for GC). A replica that dies drops its
    /// connection, and PostgreSQL releases its locks with it. SQLite serves one process: the local gate is all.
    /// </summary>
    private async Task<Func<ValueTask>?> AcrossReplicasAsync(string lockFunction, string unlockFunction, CancellationToken cancellationToken)
    {
        if (!db.IsPostgres)
            return null;
        var connection = await db.OpenAsync(cancellationToken);
        try
        {
            await using (var take = connection.CreateCommand())
            {
                take.CommandText = $"SELECT {lockFunction}({GateLockKey})";
                take.CommandTimeout = 0; // as long as the other replicas' uploads (or their GC) take; cancellable
                await take.ExecuteNonQueryAsync(cancellationToken);
            }
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
        return async () =>
        {
            try
            {
                await using var release = connection.CreateCommand();
                release.CommandText = $"SELECT {unlockFunction}({GateLockKey})";
                await release.ExecuteNonQueryAsync();
            }
            catch (System.Data.Common.DbException)
            {
                // The connection is gone, and with it the lock.
            }
            finally
            {
                await connection.DisposeAsync();
            }
        };
    }

    public void Dispose()
    {
        _turnstile.Dispose();
        _exclusive.Dispose();
    }

    private sealed class Lease(Action release, Func<ValueTask>? releaseAcross) : IAsyncDisposable
    {
        private int _released;

        public async ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _released, 1) != 0)
                return;
            try
            {
                if (releaseAcross is not null)
                    await releaseAcross();
            }
            finally
            {
                release();
            }
        }
    }
}
