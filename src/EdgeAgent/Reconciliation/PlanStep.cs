using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Reconciliation;

/// <summary>One command of a reconcile plan; executed by <see cref="ReconcileService"/>.</summary>
public abstract record PlanStep;

public sealed record DetachStep(int Lun) : PlanStep;

public sealed record PullStep(ImageDigest Digest) : PlanStep;

public sealed record AttachStep(int Lun, ImageDigest Digest, DriveMode Mode, bool ReadOnly) : PlanStep;

/// <summary>The desired state cannot be applied as asked (e.g. a LUN the gadget does not have).</summary>
public sealed record UnsatisfiableStep(int Lun, string Reason) : PlanStep;
