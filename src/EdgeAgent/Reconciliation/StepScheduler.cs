namespace MsdFleet.EdgeAgent.Reconciliation;

/// <summary>
/// Runs the long steps of a plan (pulls, working copies) off the reconcile loop, so a long pull never
/// delays an eject. One job per key at a time; a job carries a tag (what it works towards, e.g. the base
/// image of a working copy): asking for the same key with another tag cancels the running job and starts
/// the new one only after the old has finished, so two jobs never write the same files. Jobs whose key is
/// no longer planned are cancelled (<see cref="CancelExcept"/>). A failed job is retried with exponential
/// back-off (5 s doubling to 5 min). Every finished job wakes the loop.
/// <para>Concurrency: <see cref="_lock"/> guards both maps. A job is entered into <see cref="_running"/>
/// under the lock before its task starts, and removes itself under the same lock only if the entry is
/// still its own — so a job that finishes at once can never be "registered" after it removed itself,
/// which would leave its key blocked forever.</para>
/// </summary>
public sealed partial class StepScheduler(DesiredStateHolder desired, TimeProvider time, ILogger<StepScheduler> logger) : IAsyncDisposable
{
    private static readonly TimeSpan FirstBackoff = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromMinutes(5);
    private readonly Lock _lock = new();
    private readonly Dictionary<string, Job> _running = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (DateTimeOffset RetryAt, int Failures, string Tag)> _failures = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stopping = new();
    private int _disposed;

    public enum StartResult { Started, AlreadyRunning, WaitingForPrevious, BackingOff, Stopped }

    public bool IsIdle
    {
        get
        {
            lock (_lock)
                return _running.Count == 0;
        }
    }

    public bool IsRunning(string key)
    {
        lock (_lock)
            return _running.ContainsKey(key);
    }

    /// <summary>Starts <paramref name="work"/> as the job <paramref name="key"/> unless one runs already (see the class summary).</summary>
    public StartResult Start(string key, string tag, Func<CancellationToken, Task> work, Func<Exception, Task>? onFailure = null)
    {
        ArgumentNullException.ThrowIfNull(work);
        lock (_lock)
        {
            if (_stopping.IsCancellationRequested)
                return StartResult.Stopped;
            if (_running.TryGetValue(key, out var running))
            {
                if (string.Equals(running.Tag, tag, StringComparison.Ordinal))
                    return StartResult.AlreadyRunning;
                running.Cancel.Cancel();
                return StartResult.WaitingForPrevious;
            }
            if (_failures.TryGetValue(key, out var failure) && string.Equals(failure.Tag, tag, StringComparison.Ordinal) && failure.RetryAt > time.GetUtcNow())
                return StartResult.BackingOff;
            var job = new Job(tag, CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token));
            _running[key] = job;
            job.Task = Task.Run(() => RunAsync(key, job, work, onFailure), CancellationToken.None);
            return StartResult.Started;
        }
    }

    /// <summary>Cancels every running job whose key is not in <paramref name="wanted"/> (nobody needs it any more).</summary>
    public void CancelExcept(IReadOnlySet<string> wanted)
    {
        ArgumentNullException.ThrowIfNull(wanted);
        lock (_lock)
        {
            foreach (var (key, job) in _running)
            {
                if (!wanted.Contains(key) && !job.Cancel.IsCancellationRequested)
                {
                    job.Cancel.Cancel();
                    Log.Cancelled(logger, key);
                }
            }
            foreach (var key in _failures.Keys.Where(k => !wanted.Contains(k)).ToList())
                _failures.Remove(key);
        }
    }

    private async Task RunAsync(string key, Job job, Func<CancellationToken, Task> work, Func<Exception, Task>? onFailure)
    {
        try
        {
            await work(job.Cancel.Token);
            lock (_lock)
                _failures.Remove(key);
        }
        catch (OperationCanceledException) when (job.Cancel.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            lock (_lock)
            {
                var failures = _failures.TryGetValue(key, out var f) && string.Equals(f.Tag, job.Tag, StringComparison.Ordinal) ? f.Failures + 1 : 1;
                var backoff = TimeSpan.FromTicks(Math.Min(MaxBackoff.Ticks, FirstBackoff.Ticks * (1L << Math.Min(failures - 1, 20))));
                _failures[key] = (time.GetUtcNow() + backoff, failures, job.Tag);
            }
            Log.Failed(logger, key, ex);
            if (onFailure is not null)
            {
                try
                {
                    await onFailure(ex);
                }
                catch (Exception callbackFailure) when (callbackFailure is not OutOfMemoryException)
                {
                    Log.Failed(logger, key, callbackFailure);
                }
            }
        }
        finally
        {
            lock (_lock)
            {
                if (_running.TryGetValue(key, out var current) && ReferenceEquals(current, job))
                    _running.Remove(key);
            }
            job.Cancel.Dispose();
            desired.Poke();
        }
    }

    /// <summary>Cancels every job and waits for them to end (agent shutdown). Safe to call more than once.</summary>
    public async Task StopAsync()
    {
        Task[] tasks;
        lock (_lock)
        {
            if (!_stopping.IsCancellationRequested)
                _stopping.Cancel();
            tasks = _running.Values.Select(j => j.Task).OfType<Task>().ToArray();
        }
        await Task.WhenAll(tasks).ContinueWith(_ => { }, TaskScheduler.Default);
    }

    /// <summary>Stops (if the loop has not already) and releases the token; the container calls it once, after the loop's own stop.</summary>
    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
            _stopping.Dispose();
    }

    private sealed class Job(string tag, CancellationTokenSource cancel)
    {
        public string Tag { get; } = tag;
        public CancellationTokenSource Cancel { get; } = cancel;
        public Task? Task { get; set; }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Error, "Background step {Key} failed")]
        public static partial void Failed(ILogger logger, string key, Exception exception);

        [LoggerMessage(2, LogLevel.Information, "Background step {Key} is no longer wanted; cancelled")]
        public static partial void Cancelled(ILogger logger, string key);
    }
}
