using MessagePack;

namespace MsdFleet.Protocol.Messages;

/// <summary>
/// What an agent observes to be true, published retained on its <c>reported</c> topic. Keys are wire
/// format: append only, never renumber.
/// </summary>
[MessagePackObject]
public sealed record AgentReport
{
    [Key(0)] public required string AgentVersion { get; init; }
    [Key(1)] public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>();
    [Key(2)] public IReadOnlyList<DriveReport> Drives { get; init; } = [];
    [Key(3)] public IReadOnlyList<CachedImageReport> Cache { get; init; } = [];
    [Key(4)] public long FreeBytes { get; init; }
    [Key(5)] public long TotalBytes { get; init; }
    [Key(6)] public IReadOnlyList<TransferReport> Transfers { get; init; } = [];
    /// <summary>The desired generation the agent has fully converged to (0 before the first).</summary>
    [Key(7)] public long AppliedGeneration { get; init; }
    [Key(8)] public string? LastError { get; init; }
    [Key(9)] public long ReportedAtUnixMs { get; init; }
}

[MessagePackObject]
public sealed record DriveReport
{
    [Key(0)] public required int Index { get; init; }
    /// <summary>Digest of the attached image, or null when the LUN has no file.</summary>
    [Key(1)] public string? ImageDigest { get; init; }
    [Key(2)] public DriveMode Mode { get; init; }
    [Key(3)] public bool ReadOnly { get; init; }
    [Key(4)] public bool Connected { get; init; }
    /// <summary>The UDC's view of the host side, e.g. <c>configured</c> or <c>not attached</c>.</summary>
    [Key(5)] public string? HostState { get; init; }
    [Key(6)] public string? Error { get; init; }
    /// <summary>Where the drive lives on the gadget: its mass-storage function and the LUN within it.</summary>
    [Key(7)] public string? Function { get; init; }
    [Key(8)] public int Lun { get; init; }
    /// <summary>Whether the drive can present a CD-ROM, and a writable flash drive.</summary>
    [Key(9)] public bool CdromCapable { get; init; }
    [Key(10)] public bool WritableCapable { get; init; }
    /// <summary>The drive's working copy (writable drives), attached or kept; null when it has none.</summary>
    [Key(11)] public WorkingCopyReport? WorkingCopy { get; init; }
    /// <summary>What the host read from this drive, where the kernel lets the agent see it; null when unknown.</summary>
    [Key(12)] public HostReadReport? HostRead { get; init; }
    /// <summary>The drive's latest snapshot (save-back), running or finished; null when none was asked for.</summary>
    [Key(13)] public SnapshotReport? Snapshot { get; init; }
}

/// <summary>Snapshot states. Values are wire format: append only.</summary>
public enum SnapshotState
{
    Running = 0,
    Succeeded = 1,
    Failed = 2,
}

[MessagePackObject]
public sealed record SnapshotReport
{
    [Key(0)] public required string Id { get; init; }
    [Key(1)] public SnapshotState State { get; init; }
    /// <summary>Bytes of the working copy cut so far, of <see cref="BytesTotal"/>.</summary>
    [Key(2)] public long BytesDone { get; init; }
    [Key(3)] public long BytesTotal { get; init; }
    /// <summary>Bytes the catalog lacked and that were sent.</summary>
    [Key(4)] public long BytesSent { get; init; }
    [Key(5)] public string? ImageName { get; init; }
    [Key(6)] public string? ImageDigest { get; init; }
    [Key(7)] public string? Error { get; init; }
}

/// <summary>
/// A writable drive's own copy of an image. <see cref="UnsavedWrites"/> is true once the server wrote to
/// it since it was made or saved; such a copy is discarded only when the desired state says so.
/// </summary>
[MessagePackObject]
public sealed record WorkingCopyReport
{
    [Key(0)] public required string BaseDigest { get; init; }
    [Key(1)] public long Size { get; init; }
    [Key(2)] public bool UnsavedWrites { get; init; }
    /// <summary>True while the gadget presents this copy.</summary>
    [Key(3)] public bool Attached { get; init; }
}

/// <summary>The host's reads of one drive, as far as the kernel shows them (see the agent's host-read monitor).</summary>
[MessagePackObject]
public sealed record HostReadReport
{
    /// <summary>Bytes the host read from this drive since it was attached; null when only the time is known.</summary>
    [Key(0)] public long? BytesRead { get; init; }
    /// <summary>When the host last read from this drive (Unix ms); 0 when it has not since attach.</summary>
    [Key(1)] public long LastReadUnixMs { get; init; }
    /// <summary>Bytes the host wrote since attach, where known.</summary>
    [Key(2)] public long? BytesWritten { get; init; }
    /// <summary>The byte figures are estimates: several drives of one function were read at the same moment.</summary>
    [Key(3)] public bool BytesEstimated { get; init; }
}

[MessagePackObject]
public sealed record CachedImageReport
{
    [Key(0)] public required string ImageDigest { get; init; }
    [Key(1)] public required long Size { get; init; }
}

/// <summary>Transfer states. Values are wire format: append only.</summary>
public enum TransferState
{
    Pulling = 0,
    Verifying = 1,
    Complete = 2,
    Failed = 3,
    /// <summary>Paused outside its download windows; <see cref="TransferReport.ResumesAtUnixMs"/> says when it goes on.</summary>
    Waiting = 4,
}

[MessagePackObject]
public sealed record TransferReport
{
    [Key(0)] public required string ImageDigest { get; init; }
    [Key(1)] public long BytesDone { get; init; }
    [Key(2)] public long BytesTotal { get; init; }
    [Key(3)] public TransferState State { get; init; }
    [Key(4)] public string? Error { get; init; }
    /// <summary>When a <see cref="TransferState.Waiting"/> pull's next window opens (null: none will).</summary>
    [Key(5)] public long? ResumesAtUnixMs { get; init; }
}
