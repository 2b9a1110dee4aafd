using System.Collections.Concurrent;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>Live progress of pulls, read by the reporter; one entry per image digest.</summary>
public sealed class TransferTracker
{
    private readonly ConcurrentDictionary<string, TransferProgress> _transfers = new(StringComparer.Ordinal);
    // Where a cancelled pull got to, until it is reported waiting (or starts again).
    private readonly ConcurrentDictionary<string, TransferProgress> _last = new(StringComparer.Ordinal);

    public TransferProgress Start(string digest, long total)
    {
        var progress = new TransferProgress(digest, total);
        _last.TryRemove(digest, out _);
        _transfers[digest] = progress;
        return progress;
    }

    /// <param name="keepLast">Remember how far it got, for <see cref="Waiting"/> (a pull cancelled, perhaps by its window).</param>
    public void Remove(string digest, bool keepLast = false)
    {
        if (_transfers.TryRemove(digest, out var progress) && keepLast)
            _last[digest] = progress;
        else
            _last.TryRemove(digest, out _);
    }

    /// <summary>The pull waits for its download window (until <paramref name="resumesAt"/>; null: none will open); reported from where it got.</summary>
    public void Waiting(string digest, DateTimeOffset? resumesAt)
    {
        _last.TryRemove(digest, out var last);
        var waiting = new TransferProgress(digest, last?.BytesTotal ?? 0) { State = TransferState.Waiting, ResumesAtUnixMs = resumesAt?.ToUnixTimeMilliseconds() };
        waiting.Add(last?.BytesDone ?? 0);
        _transfers.AddOrUpdate(digest, waiting, (_, current) => current.State == TransferState.Waiting ? waiting.WithDone(current) : waiting);
    }

    public IReadOnlyList<TransferReport> Snapshot() =>
        _transfers.Values.Select(p => new TransferReport
        {
            ImageDigest = p.Digest,
            BytesDone = p.BytesDone,
            BytesTotal = p.BytesTotal,
            State = p.State,
            Error = p.Error,
            ResumesAtUnixMs = p.ResumesAtUnixMs,
        }).OrderBy(t => t.ImageDigest, StringComparer.Ordinal).ToList();
}

public sealed class TransferProgress(string digest, long total)
{
    private long _done;

    public string Digest { get; } = digest;
    public long BytesTotal { get; } = total;
    public long BytesDone => Interlocked.Read(ref _done);
    public TransferState State { get; set; } = TransferState.Pulling;
    public string? Error { get; set; }
    public long? ResumesAtUnixMs { get; init; }

    public void Add(long bytes) => Interlocked.Add(ref _done, bytes);

    /// <summary>This waiting entry with the progress of the one it replaces (a second "still waiting" keeps what the first knew).</summary>
    internal TransferProgress WithDone(TransferProgress previous)
    {
        var merged = new TransferProgress(Digest, Math.Max(BytesTotal, previous.BytesTotal)) { State = State, ResumesAtUnixMs = ResumesAtUnixMs };
        merged.Add(Math.Max(BytesDone, previous.BytesDone));
        return merged;
    }
}
