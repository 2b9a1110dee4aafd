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
        var plan = ReconcilePlanner.Plan(Desired(Drive(0, A, DriveMode.Flash, ro: false)), Observed([A], With(0, A, DriveMode.Cdrom, true)));
        Assert.Equal([new DetachStep(0), new AttachStep(0, A, DriveMode.Flash, false)], plan);
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

    [Fact]
    public void Plan_EveryCombination_DetachesBeforePullsBeforeAttaches_AndConvergesWhenApplied()
    {
        // Exhaustive over one LUN: observed medium × desired image/mode/ro/connected × cache contents.
        ImageDigest?[] images = [null, A, B];
        DriveMode[] modes = [DriveMode.Cdrom, DriveMode.Flash];
        foreach (var observedImage in images)
        foreach (var observedMode in modes)
        foreach (var observedRo in new[] { true, false })
        foreach (var hasMedium in new[] { true, false })
        foreach (var desiredImage in images)
        foreach (var desiredMode in modes)
        foreach (var desiredRo in new[] { true, false })
        foreach (var connected in new[] { true, false })
        foreach (var cacheA in new[] { true, false })
        {
            var cached = cacheA ? new[] { A } : [];
            var lun = hasMedium ? With(0, observedImage, observedMode, observedRo) : Empty(0);
            var desired = Desired(Drive(0, desiredImage, desiredMode, desiredRo, connected));
            var plan = ReconcilePlanner.Plan(desired, Observed(cached, lun));

            var order = plan.Select(s => s switch { DetachStep => 0, PullStep => 1, AttachStep => 2, _ => 3 }).ToList();
            Assert.Equal(order.Order(), order);

            // Apply the plan to a model and plan again: nothing may be left but pulls of uncached images.
            var cache = cached.Select(c => c.ToString()).ToHashSet();
            var model = lun;
            foreach (var step in plan)
            {
                model = step switch
                {
                    DetachStep => Empty(0),
                    AttachStep a => With(0, a.Digest, a.Mode, a.ReadOnly),
                    _ => model,
                };
            }
            var again = ReconcilePlanner.Plan(desired, new ObservedState { Luns = new Dictionary<int, ObservedLun> { [0] = model }, CachedDigests = cache });
            Assert.All(again, s => Assert.IsType<PullStep>(s));
            if (connected && desiredImage is { } want && cache.Contains(want.ToString()))
                Assert.Equal(want, model.ImageDigest);
            if (!connected || desiredImage is null)
                Assert.False(model.HasMedium);
        }
    }
}
