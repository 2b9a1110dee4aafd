using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Reconciliation;

/// <summary>What the agent sees right now: each drive as read back from the gadget, the local cache, and the working copies.</summary>
public sealed record ObservedState
{
    public required IReadOnlyDictionary<int, ObservedLun> Luns { get; init; }
    public required IReadOnlySet<string> CachedDigests { get; init; }
    public IReadOnlyDictionary<int, ObservedWorkingCopy> WorkingCopies { get; init; } = new Dictionary<int, ObservedWorkingCopy>();

    /// <summary>Drives a running snapshot owns: the planner leaves them alone until it ends.</summary>
    public IReadOnlySet<int> HeldDrives { get; init; } = new HashSet<int>();
}

/// <summary>
/// A drive as read back. <see cref="ImageDigest"/> is set only when the drive's file is an image of our
/// <c>images/</c> folder, or this drive's own working copy (then <see cref="IsWorkingCopy"/> is true and the
/// digest is the copy's base); <see cref="HasMedium"/> is true for any attached file, ours or not.
/// </summary>
public sealed record ObservedLun(int Index, bool Exists, bool HasMedium, ImageDigest? ImageDigest, DriveMode Mode, bool ReadOnly)
{
    public bool IsWorkingCopy { get; init; }
}

/// <summary>A drive's working copy: the verified image it was made from, and whether the server has written to it since.</summary>
public sealed record ObservedWorkingCopy(ImageDigest BaseDigest, bool UnsavedWrites)
{
    /// <summary>The request id of the last snapshot that finished (succeeded or failed), so each request runs once.</summary>
    public string? LastSnapshotId { get; init; }
}
