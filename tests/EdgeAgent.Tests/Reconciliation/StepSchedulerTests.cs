using Microsoft.Extensions.Logging.Abstractions;
using MsdFleet.EdgeAgent.Reconciliation;
using MsdFleet.EdgeAgent.Storage;

namespace MsdFleet.EdgeAgent.Tests.Reconciliation;

public sealed class StepSchedulerTests : IAsyncDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private readonly TempDirectory _dir = new();
    private readonly DesiredStateHolder _desired;
    private readonly StepScheduler _scheduler;

    public StepSchedulerTests()
    {
        _desired = new DesiredStateHolder(new LocalImageStore(_dir.Path));
        _scheduler = new StepScheduler(_desired, TimeProvider.System, NullLogger<StepScheduler>.Instance);
    }

    public async ValueTask DisposeAsync()
    {
        await _scheduler.DisposeAsync();
        _desired.Dispose();
        _dir.Dispose();
    }

    /// <summary>A job that runs until it is cancelled: waits on the token, not on a clock.</summary>
    private static Task UntilCancelledAsync(CancellationToken ct) => new TaskCompletionSource().Task.WaitAsync(ct);

    private async Task WaitIdleAsync(string key)
    {
        var deadline = DateTime.UtcNow + Timeout;
        while (_scheduler.IsRunning(key))
        {
            Assert.True(DateTime.UtcNow < deadline, $"{key} never finished");
            await _desired.WaitForChangeAsync(TimeSpan.FromMilliseconds(50), CancellationToken.None);
        }
    }

    [Fact]
    public async Task Start_JobThatFinishesAtOnce_CanRunAgain()
    {
        // The old scheduler registered a task after it might already have removed itself: the key then
        // stayed "running" forever and the digest was never pulled again.
        for (var i = 0; i < 200; i++)
        {
            var ran = new TaskCompletionSource();
            Assert.Equal(StepScheduler.StartResult.Started, _scheduler.Start("pull:x", "", _ =>
            {
                ran.SetResult();
                return Task.CompletedTask;
            }));
            await ran.Task.WaitAsync(Timeout);
            await WaitIdleAsync("pull:x");
        }
        Assert.True(_scheduler.IsIdle);
    }

    [Fact]
    public async Task Start_SameKeyAndTag_RunsOnce()
    {
        var release = new TaskCompletionSource();
        var runs = 0;
        Task Work(CancellationToken ct)
        {
            Interlocked.Increment(ref runs);
            return release.Task.WaitAsync(ct);
        }
        Assert.Equal(StepScheduler.StartResult.Started, _scheduler.Start("copy:0", "a", Work));
        Assert.Equal(StepScheduler.StartResult.AlreadyRunning, _scheduler.Start("copy:0", "a", Work));
        release.SetResult();
        await WaitIdleAsync("copy:0");
        Assert.Equal(1, runs);
    }

    [Fact]
    public async Task Start_OtherTag_CancelsRunningJobAndStartsOnlyAfterItEnded()
    {
        var cancelled = new TaskCompletionSource();
        var stillRunning = new TaskCompletionSource();
        _scheduler.Start("copy:0", "base-a", async ct =>
        {
            try
            {
                await UntilCancelledAsync(ct);
            }
            catch (OperationCanceledException)
            {
                cancelled.SetResult();
                await stillRunning.Task; // cleaning up: a second job must not start meanwhile
                throw;
            }
        });
        Assert.Equal(StepScheduler.StartResult.WaitingForPrevious, _scheduler.Start("copy:0", "base-b", _ => Task.CompletedTask));
        await cancelled.Task.WaitAsync(Timeout);
        Assert.Equal(StepScheduler.StartResult.WaitingForPrevious, _scheduler.Start("copy:0", "base-b", _ => Task.CompletedTask));
        stillRunning.SetResult();
        await WaitIdleAsync("copy:0");
        Assert.Equal(StepScheduler.StartResult.Started, _scheduler.Start("copy:0", "base-b", _ => Task.CompletedTask));
    }

    [Fact]
    public async Task CancelExcept_JobNobodyWants_IsCancelled_WantedOneKeepsRunning()
    {
        var unwantedCancelled = new TaskCompletionSource();
        var release = new TaskCompletionSource();
        _scheduler.Start("pull:old", "", async ct =>
        {
            await using var _ = ct.Register(() => unwantedCancelled.TrySetResult());
            await UntilCancelledAsync(ct);
        });
        _scheduler.Start("pull:new", "", ct => release.Task.WaitAsync(ct));
        _scheduler.CancelExcept(new HashSet<string> { "pull:new" });
        await unwantedCancelled.Task.WaitAsync(Timeout);
        await WaitIdleAsync("pull:old");
        Assert.True(_scheduler.IsRunning("pull:new"));
        release.SetResult();
        await WaitIdleAsync("pull:new");
    }

    [Fact]
    public async Task Start_AfterFailure_BacksOff_ThenFailureCallbackSawTheError()
    {
        var failed = new TaskCompletionSource<Exception>();
        _scheduler.Start("pull:bad", "", _ => throw new IOException("disk on fire"), ex =>
        {
            failed.SetResult(ex);
            return Task.CompletedTask;
        });
        Assert.Equal("disk on fire", (await failed.Task.WaitAsync(Timeout)).Message);
        await WaitIdleAsync("pull:bad");
        Assert.Equal(StepScheduler.StartResult.BackingOff, _scheduler.Start("pull:bad", "", _ => Task.CompletedTask));
        // Unwanted, then wanted again: a fresh start, no back-off left over.
        _scheduler.CancelExcept(new HashSet<string>());
        Assert.Equal(StepScheduler.StartResult.Started, _scheduler.Start("pull:bad", "", _ => Task.CompletedTask));
    }
}
