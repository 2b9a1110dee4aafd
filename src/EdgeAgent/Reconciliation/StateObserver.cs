using MsdFleet.EdgeAgent.Gadget;
using MsdFleet.EdgeAgent.Snapshots;
using MsdFleet.EdgeAgent.Storage;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Reconciliation;

/// <summary>
/// Reads what is true now — every drive from the gadget, the verified cache, the working copies — and
/// turns it into the planner's <see cref="ObservedState"/>. A drive's file counts as ours only when it is
/// a file of <c>images/</c> or that same drive's working copy; anything else is "some medium".
/// </summary>
public sealed class StateObserver(IGadgetDriver gadget, LocalImageStore store, WorkingCopyStore copies, DriveSnapshotter snapshots)
{
    public async Task<Observation> ObserveAsync(CancellationToken cancellationToken)
    {
        var drives = await gadget.ReadDrivesAsync(cancellationToken);
        var workingCopies = copies.List();
        var luns = new Dictionary<int, ObservedLun>();
        foreach (var drive in drives)
        {
            var digest = store.DigestOfImagePath(drive.File);
            var isCopy = false;
            if (digest is null && copies.DriveOfPath(drive.File) == drive.Index && workingCopies.TryGetValue(drive.Index, out var copy))
            {
                digest = copy.BaseDigest;
                isCopy = true;
            }
            var mode = !drive.HasMedium ? DriveMode.None : drive.Cdrom ? DriveMode.Cdrom : DriveMode.Flash;
            luns[drive.Index] = new ObservedLun(drive.Index, true, drive.HasMedium, digest, mode, drive.ReadOnly) { IsWorkingCopy = isCopy };
        }
        var state = new ObservedState
        {
            Luns = luns,
            CachedDigests = store.ListImages().Select(i => i.Digest.ToString()).ToHashSet(StringComparer.Ordinal),
            WorkingCopies = workingCopies.ToDictionary(c => c.Key, c => new ObservedWorkingCopy(c.Value.BaseDigest, c.Value.UnsavedWrites)
            {
                LastSnapshotId = c.Value.LastSnapshot?.Id,
            }),
            HeldDrives = snapshots.HeldDrives,
        };
        return new Observation(state, drives, workingCopies);
    }
}

/// <summary>One observation: the planner's view plus the raw drive states and copies the reporter needs.</summary>
public sealed record Observation(ObservedState State, IReadOnlyList<DriveState> Drives, IReadOnlyDictionary<int, WorkingCopy> WorkingCopies);
