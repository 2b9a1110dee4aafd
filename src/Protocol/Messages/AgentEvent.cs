using MessagePack;

namespace MsdFleet.Protocol.Messages;

/// <summary>Event kinds on the non-retained <c>events</c> topic. Values are wire format: append only.</summary>
public enum AgentEventKind
{
    PullProgress = 0,
    PullCompleted = 1,
    PullFailed = 2,
    Attached = 3,
    Detached = 4,
    DesiredRejected = 5,
    /// <summary>A working copy is being made (a copy where the filesystem cannot clone); bytes done/total.</summary>
    WorkingCopyProgress = 6,
    WorkingCopyCreated = 7,
    WorkingCopyDiscarded = 8,
    SnapshotProgress = 9,
    SnapshotCompleted = 10,
    SnapshotFailed = 11,
}

/// <summary>A progress or notable event, for live views; never needed for convergence.</summary>
[MessagePackObject]
public sealed record AgentEvent
{
    [Key(0)] public required AgentEventKind Kind { get; init; }
    [Key(1)] public string? ImageDigest { get; init; }
    [Key(2)] public long BytesDone { get; init; }
    [Key(3)] public long BytesTotal { get; init; }
    [Key(4)] public string? Message { get; init; }
    [Key(5)] public long AtUnixMs { get; init; }
    /// <summary>The drive the event is about, or null.</summary>
    [Key(6)] public int? Drive { get; init; }
}
