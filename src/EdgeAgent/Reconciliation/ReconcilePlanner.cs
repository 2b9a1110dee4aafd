using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Reconciliation;

/// <summary>
/// Pure: compares desired with observed state and returns the steps that close the gap, in a safe
/// order: detaches first (a server never keeps a medium the Coordinator no longer wants), then discards of
/// working copies nobody needs, then pulls (including pre-staging images of disconnected drives and the staged images of <see cref="DesiredState.Prefetch"/>, each with its pull policy), then
/// working copies to make, then attaches of what is ready. Only drives the desired state names are touched.
/// An empty plan means converged.
/// <para>Writable drives: a read-write flash drive presents its own working copy of the image, never the
/// cache file. A copy that no longer matches its drive (another image, or read-only now) is removed only
/// when it has no unsaved writes or the drive says <see cref="DesiredDrive.DiscardWrites"/>; otherwise the
/// drive is left as it is and reported blocked, so what a server wrote is never lost behind its back.
/// Emptying a drive (no image) keeps its copy: re-mounting the same image writable brings the writes back.</para>
/// <para>A snapshot request (once per id) runs in the background and holds its drive: a held drive gets no steps.</para>
/// </summary>
public static class ReconcilePlanner
{
    public static IReadOnlyList<PlanStep> Plan(DesiredState? desired, ObservedState observed)
    {
        ArgumentNullException.ThrowIfNull(observed);
        if (desired is null)
            return [];
        var detaches = new List<PlanStep>();
        var discards = new List<PlanStep>();
        var pulls = new List<PlanStep>();
        var copies = new List<PlanStep>();
        var attaches = new List<PlanStep>();
        var pulling = new Dictionary<string, int>(StringComparer.Ordinal);
        // Two wants of one image make one pull, under the looser of their policies.
        void Pull(ImageDigest digest, PullPolicy? policy)
        {
            if (observed.CachedDigests.Contains(digest.ToString()))
                return;
            if (pulling.TryGetValue(digest.ToString(), out var at))
                pulls[at] = new PullStep(digest) { Policy = PullPolicy.Loosest(((PullStep)pulls[at]).Policy, policy) };
            else
            {
                pulling[digest.ToString()] = pulls.Count;
                pulls.Add(new PullStep(digest) { Policy = policy });
            }
        }

        foreach (var drive in desired.Drives.OrderBy(d => d.Index))
        {
            if (observed.HeldDrives.Contains(drive.Index))
                continue; // a snapshot owns this drive until it ends
            var lun = observed.Luns.GetValueOrDefault(drive.Index);
            if (lun is null || !lun.Exists)
            {
                if (drive.Connected)
                    detaches.Add(new UnsatisfiableStep(drive.Index, $"The gadget has no drive {drive.Index}."));
                continue;
            }
            ImageDigest? digest = drive.ImageDigest is not null && ImageDigest.TryParse(drive.ImageDigest, out var d) ? d : null;
            if (drive.ImageDigest is not null && digest is null)
            {
                detaches.Add(new UnsatisfiableStep(drive.Index, $"'{drive.ImageDigest}' is not a valid digest."));
                continue;
            }
            var wantsAttached = drive.Connected && digest is not null;
            var writable = digest is not null && drive.Mode == DriveMode.Flash && !drive.ReadOnly;
            var copy = observed.WorkingCopies.GetValueOrDefault(drive.Index);
            if (drive.Snapshot is { } snapshot && copy?.LastSnapshotId != snapshot.Id)
            {
                if (copy is not null)
                {
                    // Nothing else happens to the drive in this pass: the snapshot holds it from now on.
                    pulls.Add(new SnapshotStep(drive.Index, snapshot));
                    continue;
                }
                detaches.Add(new UnsatisfiableStep(drive.Index, $"Drive {drive.Index} has no working copy to save as '{snapshot.Name}'."));
            }
            var copyMatches = copy is not null && writable && copy.BaseDigest == digest;

            // A copy made from another image (or a drive that is read-only now) is in the way.
            if (copy is not null && !copyMatches && digest is not null)
            {
                if (copy.UnsavedWrites && !drive.DiscardWrites)
                {
                    detaches.Add(new UnsatisfiableStep(drive.Index,
                        $"Drive {drive.Index} has unsaved writes on its working copy of {copy.BaseDigest}; save them with a snapshot, or change the drive with discardWrites."));
                    if (!wantsAttached && lun.HasMedium)
                        detaches.Add(new DetachStep(drive.Index));
                    Pull(digest.Value, drive.Pull); // staging the next image loses nothing
                    continue;
                }
                if (lun.HasMedium && lun.IsWorkingCopy)
                    detaches.Add(new DetachStep(drive.Index));
                discards.Add(new DiscardWorkingCopyStep(drive.Index, copy.BaseDigest));
                copy = null;
            }

            var cached = digest is { } c && observed.CachedDigests.Contains(c.ToString());
            if (digest is { } wanted && !copyMatches)
                Pull(wanted, drive.Pull);

            var matches = lun.HasMedium && lun.ImageDigest == digest && lun.Mode == drive.Mode && lun.ReadOnly == drive.ReadOnly
                          && lun.IsWorkingCopy == writable;
            if (wantsAttached && matches)
                continue;
            if (lun.HasMedium && !detaches.Contains(new DetachStep(drive.Index)))
                detaches.Add(new DetachStep(drive.Index));
            if (!wantsAttached)
                continue;
            if (writable)
            {
                if (copyMatches)
                    attaches.Add(new AttachStep(drive.Index, digest!.Value, drive.Mode, drive.ReadOnly) { WorkingCopy = true });
                else if (cached)
                    copies.Add(new CreateWorkingCopyStep(drive.Index, digest!.Value));
            }
            else if (cached)
            {
                attaches.Add(new AttachStep(drive.Index, digest!.Value, drive.Mode, drive.ReadOnly));
            }
        }
        // Staged images: into the cache, onto no drive (an invalid digest is the Coordinator's bug, never a pull).
        foreach (var staged in desired.Prefetch ?? [])
            if (ImageDigest.TryParse(staged.ImageDigest, out var stagedDigest))
                Pull(stagedDigest, staged.Pull);
        return [.. detaches, .. discards, .. pulls, .. copies, .. attaches];
    }
}
