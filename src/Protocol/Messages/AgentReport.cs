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
}

[MessagePackObject]
public sealed record TransferReport
{
    [Key(0)] public required string ImageDigest { get; init; }
    [Key(1)] public long BytesDone { get; init; }
    [Key(2)] public long BytesTotal { get; init; }
    [Key(3)] public TransferState State { get; init; }
    [Key(4)] public string? Error { get; init; }
}
