using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Reconciliation;

/// <summary>One command of a reconcile plan; executed by <see cref="PlanRunner"/>.</summary>
public abstract record PlanStep;

public sealed record DetachStep(int Lun) : PlanStep;

/// <summary>Pull an image into the cache; <see cref="Policy"/> (windows, a cap of its own) as the desired state says.</summary>
public sealed record PullStep(ImageDigest Digest) : PlanStep
{
    public PullPolicy? Policy { get; init; }
}

/// <summary>Attach a verified cached image, or (<see cref="WorkingCopy"/>) the drive's own working copy of it.</summary>
public sealed record AttachStep(int Lun, ImageDigest Digest, DriveMode Mode, bool ReadOnly) : PlanStep
{
    public bool WorkingCopy { get; init; }
}

/// <summary>Make the drive's working copy of a cached, verified image (a writable drive never presents the cache file).</summary>
public sealed record CreateWorkingCopyStep(int Lun, ImageDigest BaseDigest) : PlanStep;

/// <summary>Remove a working copy that no longer matches its drive: it has no unsaved writes, or the operator discarded them.</summary>
public sealed record DiscardWorkingCopyStep(int Lun, ImageDigest BaseDigest) : PlanStep;

/// <summary>The desired state cannot be applied as asked (e.g. a drive the gadget does not have).</summary>
public sealed record UnsatisfiableStep(int Lun, string Reason) : PlanStep;

/// <summary>Save the drive's working copy as a new catalog image (detach gently, cut, push what is missing, commit).</summary>
public sealed record SnapshotStep(int Lun, SnapshotRequest Request) : PlanStep;
