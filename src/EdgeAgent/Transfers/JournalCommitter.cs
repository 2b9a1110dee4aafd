using System.Runtime.ExceptionServices;
using Microsoft.Win32.SafeHandles;

namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>
/// Which chunks of a pull are on disk, and when the journal may say so. A commit flushes the data file
/// first, then appends the records of the chunks written before that flush began, so the journal never
/// claims bytes a power cut could lose. Commits are batched by volume and run in the background: the
/// range fetches that call <see cref="Written"/> never wait for an fdatasync (they did, and the download
/// stalled for every 64 MiB written), and the kernel's writeback runs alongside the download instead of
/// all at the end. After a kill, chunks written since the last commit are found again by re-hashing.
/// <para>Concurrency: <see cref="_lock"/> guards the set, the pending batch and the background task and is never
/// held across I/O; <see cref="_commitLock"/> serializes commits (fdatasync + journal append) so batches
/// reach the journal one at a time. A background commit's failure is rethrown by the next
/// <see cref="Written"/> or <see cref="Flush"/>.</para>
/// </summary>
public sealed class JournalCommitter
{
    private readonly Lock _lock = new();
    private readonly Lock _commitLock = new();
    private readonly SafeFileHandle _handle;
    private readonly PullJournal _journal;
    private readonly long _commitEveryBytes;
    private readonly HashSet<int> _written;
    private List<int> _pending = [];
    private long _pendingBytes;
    private Task _background = Task.CompletedTask;
    private ExceptionDispatchInfo? _failure;

    public JournalCommitter(SafeFileHandle handle, PullJournal journal, long commitEveryBytes)
    {
        ArgumentNullException.ThrowIfNull(journal);
        (_handle, _journal, _commitEveryBytes) = (handle, journal, commitEveryBytes);
        // What earlier runs journaled; from here on only this set is read (the journal's own set is the committer's).
        _written = [.. journal.Done];
    }

    public void Written(int index, int length)
    {
        lock (_lock)
        {
            _failure?.Throw();
            _pending.Add(index);
            _written.Add(index);
            _pendingBytes += length;
            if (_pendingBytes >= _commitEveryBytes && _background.IsCompleted)
            {
                var batch = TakeBatchLocked();
                _background = Task.Run(() => CommitInBackground(batch));
            }
        }
    }

    /// <summary>Journaled chunks plus those written since; never fetched again in this run.</summary>
    public HashSet<int> WrittenSnapshot()
    {
        lock (_lock)
            return [.. _written];
    }

    public bool IsWritten(int index)
    {
        lock (_lock)
            return _written.Contains(index);
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

    /// <summary>Waits for a background commit to end (its failure, if any, is rethrown by <see cref="Flush"/>).</summary>
    public void WaitIdle()
    {
        Task background;
        lock (_lock)
            background = _background;
        background.Wait();
    }

    /// <summary>Waits for a background commit, then commits everything written so far.</summary>
    public void Flush()
    {
        WaitIdle();
        List<int> batch;
        lock (_lock)
        {
            _failure?.Throw();
            batch = TakeBatchLocked();
        }
        Commit(batch);
    }

    private List<int> TakeBatchLocked()
    {
        var batch = _pending;
        _pending = [];
        _pendingBytes = 0;
        return batch;
    }

    private void CommitInBackground(List<int> batch)
    {
        try
        {
            Commit(batch);
        }
        catch (Exception ex)
        {
            lock (_lock)
                _failure = ExceptionDispatchInfo.Capture(ex);
        }
    }

    /// <summary>The batch's data was written before this flush starts, so the flush covers it.</summary>
    private void Commit(List<int> batch)
    {
        if (batch.Count == 0)
            return;
        lock (_commitLock)
        {
            RandomAccess.FlushToDisk(_handle);
            _journal.Commit(batch);
        }
    }
}
