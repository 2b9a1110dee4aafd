using System.Runtime;
using Microsoft.Extensions.Options;
using MsdFleet.EdgeAgent.Gadget;
using MsdFleet.EdgeAgent.Mqtt;
using MsdFleet.EdgeAgent.Storage;

namespace MsdFleet.EdgeAgent.Reconciliation;

/// <summary>
/// The level-triggered loop, in the shape of iotedge's edge-agent: observe (<see cref="StateObserver"/>),
/// plan with the pure <see cref="ReconcilePlanner"/>, run the plan (<see cref="PlanRunner"/>, which hands
/// pulls and working copies to the <see cref="StepScheduler"/>), report (<see cref="AgentReporter"/>).
/// Each pass survives its own failure; only shutdown ends the loop. It wakes on a new desired state, a
/// finished background step, a reconnect, every second while background steps run, and every 5 s otherwise.
/// </summary>
public sealed partial class ReconcileService(
    DesiredStateHolder desired,
    IGadgetDriver gadget,
    StateObserver observer,
    PlanRunner runner,
    StepScheduler scheduler,
    AgentReporter reporter,
    StartupRecovery recovery,
    IAgentPublisher publisher,
    IOptions<GadgetOptions> gadgetOptions,
    ILogger<ReconcileService> logger) : BackgroundService
{
    private bool _gadgetReady;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        publisher.Connected += () =>
        {
            reporter.ForceNext();
            desired.Poke();
        };
        try
        {
            await recovery.RunAsync(desired.Current, stoppingToken);
        }
        catch (Exception ex) when (ex is IOException or GadgetException or UnauthorizedAccessException)
        {
            runner.LastError = $"Startup recovery failed: {ex.Message}";
            Log.PassFailed(logger, ex);
        }
        var worked = false; // background work ran since the last trim (steps start only inside passes)
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                var observation = await PassAsync(stoppingToken);
                await reporter.ReportAsync(observation ?? await observer.ObserveAsync(stoppingToken), stoppingToken);
                if (!scheduler.IsIdle)
                    worked = true;
                else if (worked)
                {
                    TrimMemory();
                    worked = false;
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex)
            {
                runner.LastError = ex.Message;
                Log.PassFailed(logger, ex);
            }
            try
            {
                await desired.WaitForChangeAsync(scheduler.IsIdle ? TimeSpan.FromSeconds(5) : TimeSpan.FromSeconds(1), stoppingToken);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
        await scheduler.StopAsync();
    }

    /// <returns>The state after the pass, observed again when the pass changed anything; null when the gadget is not ready.</returns>
    /// <summary>
    /// A Pi has little memory: once background work (pulls, copies, snapshots) has ended and the pass
    /// after it has run (attach included), give back what it left — a multi-gigabyte image's manifest,
    /// layout and chunk sets. An idle agent allocates almost nothing, so without this no GC would run
    /// and the garbage would stay resident.
    /// </summary>
    private static void TrimMemory()
    {
        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    private async Task<Observation?> PassAsync(CancellationToken cancellationToken)
    {
        if (gadgetOptions.Value.Create && !_gadgetReady)
        {
            try
            {
                if (await gadget.EnsureGadgetAsync(cancellationToken))
                    Log.GadgetBuilt(logger, gadgetOptions.Value.GadgetName);
                _gadgetReady = true;
            }
            catch (GadgetException ex)
            {
                runner.LastError = ex.Message;
                Log.GadgetFailed(logger, ex.Message);
                return null;
            }
        }
        var state = desired.Current;
        var before = await observer.ObserveAsync(cancellationToken);
        var plan = ReconcilePlanner.Plan(state, before.State);
        await runner.RunAsync(state, plan, cancellationToken);
        return plan.Count == 0 ? before : await observer.ObserveAsync(cancellationToken);
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Error, "Reconcile pass failed")]
        public static partial void PassFailed(ILogger logger, Exception exception);

        [LoggerMessage(4, LogLevel.Error, "Building the USB gadget failed: {Reason}")]
        public static partial void GadgetFailed(ILogger logger, string reason);

        [LoggerMessage(6, LogLevel.Information, "Built and bound USB gadget {Gadget}")]
        public static partial void GadgetBuilt(ILogger logger, string gadget);
    }
}
