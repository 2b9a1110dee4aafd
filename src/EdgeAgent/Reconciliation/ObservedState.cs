using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Reconciliation;

/// <summary>What the agent sees right now: each managed LUN as read back from the gadget, and the local cache.</summary>
public sealed record ObservedState
{
    public required IReadOnlyDictionary<int, ObservedLun> Luns { get; init; }
    public required IReadOnlySet<string> CachedDigests { get; init; }
}

/// <summary>
/// A LUN as read back. <see cref="ImageDigest"/> is set only when the LUN's file is an image of our
/// <c>images/</c> folder; <see cref="HasMedium"/> is true for any attached file, ours or not.
/// </summary>
public sealed record ObservedLun(int Index, bool Exists, bool HasMedium, ImageDigest? ImageDigest, DriveMode Mode, bool ReadOnly);
