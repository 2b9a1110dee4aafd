using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Reconciliation;

/// <summary>
/// Pure: compares desired with observed state and returns the steps that close the gap, in a safe
/// order: detaches first (a server never keeps a medium the Coordinator no longer wants), then pulls
/// (including pre-staging images of disconnected drives), then attaches of images already complete.
/// Only LUNs the desired state names are touched. An empty plan means converged.
/// </summary>
public static class ReconcilePlanner
{
    public static IReadOnlyList<PlanStep> Plan(DesiredState? desired, ObservedState observed)
    {
        ArgumentNullException.ThrowIfNull(observed);
        if (desired is null)
            return [];
        var detaches = new List<PlanStep>();
        var pulls = new List<PlanStep>();
        var attaches = new List<PlanStep>();
        var pulling = new HashSet<string>(StringComparer.Ordinal);
        foreach (var drive in desired.Drives.OrderBy(d => d.Index))
        {
            var lun = observed.Luns.GetValueOrDefault(drive.Index);
            if (lun is null || !lun.Exists)
            {
                if (drive.Connected)
                    detaches.Add(new UnsatisfiableStep(drive.Index, $"The gadget has no LUN {drive.Index}."));
                continue;
            }
            ImageDigest? digest = drive.ImageDigest is not null && ImageDigest.TryParse(drive.ImageDigest, out var d) ? d : null;
            if (drive.ImageDigest is not null && digest is null)
            {
                detaches.Add(new UnsatisfiableStep(drive.Index, $"'{drive.ImageDigest}' is not a valid digest."));
                continue;
            }
            var cached = digest is { } c && observed.CachedDigests.Contains(c.ToString());
            if (digest is { } wanted && !cached && pulling.Add(wanted.ToString()))
                pulls.Add(new PullStep(wanted));

            var wantsAttached = drive.Connected && digest is not null;
            var matches = lun.HasMedium && lun.ImageDigest == digest && lun.Mode == drive.Mode && lun.ReadOnly == drive.ReadOnly;
            if (wantsAttached && matches)
                continue;
            if (lun.HasMedium)
                detaches.Add(new DetachStep(drive.Index));
            if (wantsAttached && cached)
                attaches.Add(new AttachStep(drive.Index, digest!.Value, drive.Mode, drive.ReadOnly));
        }
        return [.. detaches, .. pulls, .. attaches];
    }
}
