using MsdFleet.EdgeAgent.Reconciliation;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Tests.Reconciliation;

public class ReconcilePlannerTests
{
    private static readonly ImageDigest A = ImageDigest.Parse("sha256:" + new string('a', 64));
    private static readonly ImageDigest B = ImageDigest.Parse("sha256:" + new string('b', 64));

    private static ObservedLun Empty(int i) => new(i, true, false, null, DriveMode.None, false);
    private static ObservedLun With(int i, ImageDigest? d, DriveMode mode, bool ro) => new(i, true, true, d, mode, ro);

    private static ObservedState Observed(IEnumerable<ImageDigest> cached, params ObservedLun[] luns) => new()
    {
        Luns = luns.ToDictionary(l => l.Index),
        CachedDigests = cached.Select(c => c.ToString()).ToHashSet(),
    };

    private static DesiredState Desired(params DesiredDrive[] drives) => new() { Generation = 1, Drives = drives };

    private static DesiredDrive Drive(int i, ImageDigest? d, DriveMode mode = DriveMode.Cdrom, bool ro = true, bool connected = true) =>
        new() { Index = i, ImageDigest = d?.ToString(), Mode = mode, ReadOnly = ro, Connected = connected };

    [Fact]
    public void StagedImage_IsPulledWithItsPolicy_AndTouchesNoDrive()
    {
        var policy = new PullPolicy { MaxBytesPerSecond = 1000, Windows = [new DownloadWindow { StartSecond = 0, EndSecond = 60 }] };
        var desired = Desired(Drive(0, null, DriveMode.None, connected: false)) with { Prefetch = [new PrefetchImage { ImageDigest = B.ToString(), Pull = policy }] };
        var plan = ReconcilePlanner.Plan(desired, Observed([], Empty(0)));
        var pull = Assert.IsType<PullStep>(Assert.Single(plan));
        Assert.Equal(B, pull.Digest);
        Assert.Same(policy, pull.Policy);
        Assert.Empty(ReconcilePlanner.Plan(desired, Observed([B], Empty(0)))); // cached: nothing to do
        var invalid = desired with { Prefetch = [new PrefetchImage { ImageDigest = "sha256:nope" }] };
        Assert.Empty(ReconcilePlanner.Plan(invalid, Observed([], Empty(0))));
    }

    [Fact]
    public void OneImageWantedTwice_IsOnePull_UnderTheLooserPolicy()
    {
        var windowed = new PullPolicy { Windows = [new DownloadWindow { StartSecond = 0, EndSecond = 60 }] };
        var desired = Desired(Drive(0, A) with { Pull = windowed }) with { Prefetch = [new PrefetchImage { ImageDigest = A.ToString() }] };
        var pull = Assert.IsType<PullStep>(Assert.Single(ReconcilePlanner.Plan(desired, Observed([], Empty(0)))));
        Assert.Null(pull.Policy); // the staged want has no window: the pull may run now
        var both = Desired(Drive(0, A) with { Pull = windowed }) with { Prefetch = [new PrefetchImage { ImageDigest = A.ToString(), Pull = windowed }] };
        Assert.Equal(2, Assert.IsType<PullStep>(Assert.Single(ReconcilePlanner.Plan(both, Observed([], Empty(0))))).Policy!.Windows!.Count);
    }

    [Fact]
    public void Plan_NoDesiredState_TouchesNothing()
    {
        Assert.Empty(ReconcilePlanner.Plan(null, Observed([], With(0, null, DriveMode.Flash, false))));
    }

    [Fact]
    public void Plan_ImageNotCached_PullsButDoesNotAttach()
    {
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, A)), Observed([], Empty(0)));
        Assert.Equal([new PullStep(A)], plan);
    }

    [Fact]
    public void Plan_ImageCached_Attaches()
    {
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, A)), Observed([A], Empty(0)));
        Assert.Equal([new AttachStep(0, A, DriveMode.Cdrom, true)], plan);
    }

    [Fact]
    public void Plan_AlreadyAttachedAsDesired_Converged()
    {
        Assert.Empty(ReconcilePlanner.Plan(Desired(Drive(0, A)), Observed([A], With(0, A, DriveMode.Cdrom, true))));
    }

    [Fact]
    public void Plan_Disconnect_Detaches()
    {
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, A, connected: false)), Observed([A], With(0, A, DriveMode.Cdrom, true)));
        Assert.Equal([new DetachStep(0)], plan);
    }

    [Fact]
    public void Plan_DisconnectedDriveWithUncachedImage_PreStagesByPulling()
    {
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, A, connected: false)), Observed([], Empty(0)));
        Assert.Equal([new PullStep(A)], plan);
    }

    [Fact]
    public void Plan_OtherImageAttachedNewNotCached_DetachesThenPulls()
    {
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, B)), Observed([A], With(0, A, DriveMode.Cdrom, true)));
        Assert.Equal([new DetachStep(0), new PullStep(B)], plan);
    }

    [Fact]
    public void Plan_ModeChange_DetachesThenAttaches()
    {
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, A, DriveMode.Flash, ro: true)), Observed([A], With(0, A, DriveMode.Cdrom, true)));
        Assert.Equal([new DetachStep(0), new AttachStep(0, A, DriveMode.Flash, true)], plan);
    }

    [Fact]
    public void Plan_ForeignFileOnManagedLun_Detached()
    {
        // A file outside images/ (digest null) is not what the Coordinator asked for.
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, null, DriveMode.None, connected: false)), Observed([], With(0, null, DriveMode.Flash, false)));
        Assert.Equal([new DetachStep(0)], plan);
    }

    [Fact]
    public void Plan_LunNotInDesired_LeftAlone()
    {
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, A)), Observed([A], Empty(0), With(1, B, DriveMode.Flash, false)));
        Assert.Equal([new AttachStep(0, A, DriveMode.Cdrom, true)], plan);
    }

    [Fact]
    public void Plan_LunMissingOnGadget_Unsatisfiable()
    {
        var plan = ReconcilePlanner.Plan(Desired(Drive(3, A)), Observed([A], Empty(0)));
        var step = Assert.IsType<UnsatisfiableStep>(Assert.Single(plan));
        Assert.Equal(3, step.Lun);
    }

    [Fact]
    public void Plan_SameImageOnTwoDrives_PulledOnce()
    {
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, A), Drive(1, A, DriveMode.Flash)), Observed([], Empty(0), Empty(1)));
        Assert.Equal([new PullStep(A)], plan);
    }

    private static ObservedState Observed(IEnumerable<ImageDigest> cached, ObservedWorkingCopy? copy, params ObservedLun[] luns) =>
        Observed(cached, luns) with { WorkingCopies = copy is null ? new Dictionary<int, ObservedWorkingCopy>() : new Dictionary<int, ObservedWorkingCopy> { [0] = copy } };

    private static ObservedLun Copy(int i, ImageDigest d) => With(i, d, DriveMode.Flash, false) with { IsWorkingCopy = true };

    [Fact]
    public void Plan_WritableDriveWithoutCopy_MakesWorkingCopyInsteadOfAttachingTheCacheFile()
    {
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, A, DriveMode.Flash, ro: false)), Observed([A], Empty(0)));
        Assert.Equal([new CreateWorkingCopyStep(0, A)], plan);
    }

    [Fact]
    public void Plan_WritableDriveWithItsCopy_AttachesTheCopyWithoutNeedingTheCache()
    {
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, A, DriveMode.Flash, ro: false)), Observed([], new ObservedWorkingCopy(A, true), Empty(0)));
        Assert.Equal([new AttachStep(0, A, DriveMode.Flash, false) { WorkingCopy = true }], plan);
    }

    [Fact]
    public void Plan_CacheFileAttachedReadWrite_IsReplacedByTheWorkingCopy()
    {
        // What older agents did: the cache file itself presented read-write.
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, A, DriveMode.Flash, ro: false)), Observed([A], With(0, A, DriveMode.Flash, false)));
        Assert.Equal([new DetachStep(0), new CreateWorkingCopyStep(0, A)], plan);
    }

    [Fact]
    public void Plan_OtherImageWhileCopyHasUnsavedWrites_BlocksAndKeepsTheDriveAsItIs()
    {
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, B, DriveMode.Flash, ro: false)), Observed([A, B], new ObservedWorkingCopy(A, true), Copy(0, A)));
        var step = Assert.IsType<UnsatisfiableStep>(Assert.Single(plan));
        Assert.Contains("unsaved writes", step.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Plan_ReadOnlyNowWhileCopyHasUnsavedWrites_Blocks()
    {
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, A, DriveMode.Flash, ro: true)), Observed([A], new ObservedWorkingCopy(A, true), Copy(0, A)));
        Assert.IsType<UnsatisfiableStep>(Assert.Single(plan));
    }

    [Fact]
    public void Plan_OtherImageWithDiscardWrites_DetachesDiscardsAndMakesNewCopy()
    {
        var drive = Drive(0, B, DriveMode.Flash, ro: false) with { DiscardWrites = true };
        var plan = ReconcilePlanner.Plan(Desired(drive), Observed([A, B], new ObservedWorkingCopy(A, true), Copy(0, A)));
        Assert.Equal([new DetachStep(0), new DiscardWorkingCopyStep(0, A), new CreateWorkingCopyStep(0, B)], plan);
    }

    [Fact]
    public void Plan_EmptyingTheDrive_DetachesButKeepsTheCopy()
    {
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, null, DriveMode.None, connected: false)), Observed([A], new ObservedWorkingCopy(A, true), Copy(0, A)));
        Assert.Equal([new DetachStep(0)], plan);
    }

    [Fact]
    public void Plan_CleanCopyOfOtherImage_DiscardedWithoutBeingAsked()
    {
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, B)), Observed([B], new ObservedWorkingCopy(A, false), Empty(0)));
        Assert.Equal([new DiscardWorkingCopyStep(0, A), new AttachStep(0, B, DriveMode.Cdrom, true)], plan);
    }

    [Fact]
    public void Plan_EveryCombination_SafeOrder_NeverLosesWrites_NeverPresentsCacheReadWrite_Converges()
    {
        // Exhaustive over one drive: observed medium × working copy × desired image/mode/ro/connected/discard × cache.
        ImageDigest?[] images = [null, A, B];
        DriveMode[] modes = [DriveMode.Cdrom, DriveMode.Flash];
        ObservedWorkingCopy?[] copies = [null, new(A, false), new(A, true), new(B, true)];
        foreach (var observedImage in images)
        foreach (var observedMode in modes)
        foreach (var observedRo in new[] { true, false })
        foreach (var hasMedium in new[] { true, false })
        foreach (var copy in copies)
        foreach (var onCopy in new[] { false, true })
        foreach (var desiredImage in images)
        foreach (var desiredMode in modes)
        foreach (var desiredRo in new[] { true, false })
        foreach (var connected in new[] { true, false })
        foreach (var discard in new[] { false, true })
        foreach (var cacheA in new[] { true, false })
        {
            if (onCopy && (copy is null || !hasMedium))
                continue;
            var cached = cacheA ? new[] { A } : [];
            var lun = onCopy ? Copy(0, copy!.BaseDigest) : hasMedium ? With(0, observedImage, observedMode, observedRo) : Empty(0);
            var desired = Desired(Drive(0, desiredImage, desiredMode, desiredRo, connected) with { DiscardWrites = discard });
            var plan = ReconcilePlanner.Plan(desired, Observed(cached, copy, lun));

            var order = plan.Select(s => s switch { UnsatisfiableStep or DetachStep => 0, DiscardWorkingCopyStep => 1, PullStep => 2, CreateWorkingCopyStep => 3, _ => 4 }).ToList();
            Assert.Equal(order.Order(), order);
            foreach (var step in plan)
            {
                if (step is DiscardWorkingCopyStep)
                    Assert.True(!copy!.UnsavedWrites || discard, "a copy with unsaved writes was discarded without being asked");
                if (step is AttachStep { Mode: DriveMode.Flash, ReadOnly: false } rw)
                    Assert.True(rw.WorkingCopy, "the cache file was presented read-write");
                if (step is AttachStep { WorkingCopy: true } w)
                    Assert.True(w.Mode == DriveMode.Flash && !w.ReadOnly);
            }

            // Apply the plan to a model, twice (a working copy is attached in the pass after it was made):
            // nothing may be left but pulls of uncached images and the refusal to lose writes.
            var cache = cached.Select(c => c.ToString()).ToHashSet();
            var model = lun;
            var modelCopy = copy;
            for (var pass = 0; pass < 2; pass++)
            {
                foreach (var step in plan)
                {
                    switch (step)
                    {
                        case DetachStep: model = Empty(0); break;
                        case DiscardWorkingCopyStep: modelCopy = null; break;
                        case CreateWorkingCopyStep c: modelCopy = new ObservedWorkingCopy(c.BaseDigest, false); break;
                        case AttachStep { WorkingCopy: true } a: model = Copy(0, a.Digest); break;
                        case AttachStep a: model = With(0, a.Digest, a.Mode, a.ReadOnly); break;
                    }
                }
                plan = ReconcilePlanner.Plan(desired, new ObservedState
                {
                    Luns = new Dictionary<int, ObservedLun> { [0] = model }, CachedDigests = cache,
                    WorkingCopies = modelCopy is null ? new Dictionary<int, ObservedWorkingCopy>() : new Dictionary<int, ObservedWorkingCopy> { [0] = modelCopy },
                });
            }
            var blocked = plan.Any(s => s is UnsatisfiableStep);
            Assert.All(plan, s => Assert.True(s is PullStep or UnsatisfiableStep, $"left over: {s}"));
            if (blocked)
                Assert.True(copy is { UnsavedWrites: true } && !discard, "blocked although no unsaved writes were at stake");
            if (copy is { UnsavedWrites: true } dirty && !discard)
                Assert.Equal(dirty, modelCopy); // what the server wrote is still there
            var writable = desiredMode == DriveMode.Flash && !desiredRo;
            if (connected && desiredImage is { } want && !blocked && (cache.Contains(want.ToString()) || (writable && copy?.BaseDigest == want)))
            {
                Assert.Equal(want, model.ImageDigest);
                Assert.Equal(writable, model.IsWorkingCopy);
            }
            if (!connected || desiredImage is null)
                Assert.False(model.HasMedium);
        }
    }
}
