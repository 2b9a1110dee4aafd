using MessagePack;

namespace MsdFleet.Protocol.Messages;

/// <summary>
/// What the Coordinator wants one agent to present, published retained on the agent's
/// <c>desired</c> topic. Keys are wire format: append only, never renumber.
/// </summary>
[MessagePackObject]
public sealed record DesiredState
{
    /// <summary>Increases by one with every change; an agent never applies an older generation.</summary>
    [Key(0)] public required long Generation { get; init; }
    [Key(1)] public required IReadOnlyList<DesiredDrive> Drives { get; init; }
    [Key(2)] public long IssuedAtUnixMs { get; init; }
    /// <summary>Pull bandwidth cap for this agent in bytes per second; null keeps the agent's configured cap, 0 is unlimited.</summary>
    [Key(3)] public long? MaxBytesPerSecond { get; init; }
    /// <summary>The agent this state is for; signed with it, so a state cannot be replayed to another agent.</summary>
    [Key(4)] public string? AgentId { get; init; }
    /// <summary>Images to hold in the cache without a drive (staged for a later attach); pinned like a drive's image.</summary>
    [Key(5)] public IReadOnlyList<PrefetchImage>? Prefetch { get; init; }
}

/// <summary>One drive (LUN) of the desired state.</summary>
[MessagePackObject]
public sealed record DesiredDrive
{
    [Key(0)] public required int Index { get; init; }
    /// <summary><c>sha256:…</c> digest of the image, or null for an empty drive.</summary>
    [Key(1)] public string? ImageDigest { get; init; }
    [Key(2)] public DriveMode Mode { get; init; }
    [Key(3)] public bool ReadOnly { get; init; } = true;
    [Key(4)] public bool Connected { get; init; }
    /// <summary>Catalog name at the time of the request; for people reading reports, never for lookup.</summary>
    [Key(5)] public string? ImageName { get; init; }
    /// <summary>
    /// The operator chose to throw away what the server wrote: a working copy with unsaved writes that
    /// does not match this drive any more may be removed. Without it the agent keeps such a copy and
    /// reports the drive as blocked.
    /// </summary>
    [Key(6)] public bool DiscardWrites { get; init; }
    /// <summary>Save this writable drive's working copy as a new catalog image (once per request id).</summary>
    [Key(7)] public SnapshotRequest? Snapshot { get; init; }
    /// <summary>How this drive's image may be pulled (windows, a cap of its own); null: at once, at the agent's cap.</summary>
    [Key(8)] public PullPolicy? Pull { get; init; }
}

/// <summary>
/// "Save what the server wrote": the agent detaches the drive (refusing while the host holds it), cuts
/// its working copy with the Coordinator's chunker, pushes only the chunks the catalog lacks and commits
/// them as <see cref="Name"/>. <see cref="Id"/> makes it happen once, however often the state is re-sent.
/// </summary>
[MessagePackObject]
public sealed record SnapshotRequest
{
    [Key(0)] public required string Id { get; init; }
    [Key(1)] public required string Name { get; init; }
}
