using System.Collections.Concurrent;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>Live progress of pulls, read by the reporter; one entry per image digest.</summary>
public sealed class TransferTracker
{
    private readonly ConcurrentDictionary<string, TransferProgress> _transfers = new(StringComparer.Ordinal);

    public TransferProgress Start(string digest, long total)
    {
        var progress = new TransferProgress(digest, total);
        _transfers[digest] = progress;
        return progress;
    }

    public void Remove(string digest) => _transfers.TryRemove(digest, out _);

    public IReadOnlyList<TransferReport> Snapshot() =>
        _transfers.Values.Select(p => new TransferReport
        {
            ImageDigest = p.Digest,
            BytesDone = p.BytesDone,
            BytesTotal = p.BytesTotal,
            State = p.State,
            Error = p.Error,
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

    public void Add(long bytes) => Interlocked.Add(ref _done, bytes);
}
