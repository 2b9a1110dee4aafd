using Microsoft.Win32.SafeHandles;

namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>
/// Which chunks of a pull are on disk, and when the journal may say so. The data file is flushed first,
/// then the records for the chunks it covers are appended, so the journal never claims bytes a power cut
/// could lose; commits are batched by volume (an fdatasync each — after a kill, chunks written since the
/// last commit are found again by re-hashing). The in-order hasher waits on <see cref="WaitWrittenAsync"/>,
/// which is signalled by <see cref="Written"/>, instead of polling.
/// <para>Concurrency: <see cref="_lock"/> guards every field; parallel range fetches call <see cref="Written"/>.</para>
/// </summary>
public sealed class JournalCommitter(SafeFileHandle handle, PullJournal journal, long commitEveryBytes)
{
    private readonly Lock _lock = new();
    private readonly List<int> _pending = [];
    private readonly HashSet<int> _written = [];
    private long _pendingBytes;
    private (int Index, TaskCompletionSource Signal)? _waiter;

    public void Written(int index, int length)
    {
        TaskCompletionSource? wake = null;
        lock (_lock)
        {
            _pending.Add(index);
            _written.Add(index);
            _pendingBytes += length;
            if (_pendingBytes >= commitEveryBytes)
                FlushLocked();
            if (_waiter is { } w && w.Index == index)
            {
                wake = w.Signal;
                _waiter = null;
            }
        }
        wake?.TrySetResult();
    }

    /// <summary>Journaled chunks plus those written since; never fetched again in this run.</summary>
    public HashSet<int> WrittenSnapshot()
    {
        lock (_lock)
            return new HashSet<int>(_written.Concat(journal.Done));
    }

    public bool IsWritten(int index)
    {
        lock (_lock)
            return IsWrittenLocked(index);
    }

    /// <summary>Completes when chunk <paramref name="index"/> is on disk. One waiter at a time (the in-order hasher).</summary>
    public Task WaitWrittenAsync(int index, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (IsWrittenLocked(index))
                return Task.CompletedTask;
            var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiter = (index, signal);
            return signal.Task.WaitAsync(cancellationToken);
        }
    }

    public int FirstUnwritten(int from, int last)
    {
        lock (_lock)
        {
            var i = from;
            while (i <= last && _written.Contains(i))
                i++;
            return i;
        }
    }

    public void Flush()
    {
        lock (_lock)
            FlushLocked();
    }

    private bool IsWrittenLocked(int index) => _written.Contains(index) || journal.Done.Contains(index);

    private void FlushLocked()
    {
        if (_pending.Count == 0)
            return;
        RandomAccess.FlushToDisk(handle);
        journal.Commit(_pending);
        _pending.Clear();
        _pendingBytes = 0;
    }
}
