using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>
/// The live policy of one image's pull: set by every reconcile pass from the desired state, read by the running
/// pull job, so a new generation's windows or cap apply to a pull already under way. A change of windows fires
/// <see cref="Changed"/>, which wakes a waiting pull and stops a running one so it re-checks its window at once.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "The sources have no timer; a replaced one is cancelled, never disposed, because a running pull may still link to its token.")]
public sealed class PullControl(TimeProvider time)
{
    private readonly Lock _lock = new();
    private PullPolicy? _policy;
    private CancellationTokenSource _changed = new();

    /// <summary>This pull's own cap (the policy's); the agent's shared cap applies as well.</summary>
    public BandwidthThrottle Throttle { get; } = new(0, time);

    public PullPolicy? Policy
    {
        get
        {
            lock (_lock)
                return _policy;
        }
    }

    /// <summary>Cancelled when the windows change; read it again after.</summary>
    public CancellationToken Changed
    {
        get
        {
            lock (_lock)
                return _changed.Token;
        }
    }

    public void Set(PullPolicy? policy)
    {
        CancellationTokenSource? old = null;
        lock (_lock)
        {
            var windowsChanged = !SameWindows(_policy?.Windows, policy?.Windows);
            _policy = policy;
            Throttle.BytesPerSecond = policy?.MaxBytesPerSecond ?? 0;
            if (windowsChanged)
            {
                old = _changed;
                _changed = new CancellationTokenSource();
            }
        }
        old?.Cancel();
    }

    private static bool SameWindows(IReadOnlyList<DownloadWindow>? a, IReadOnlyList<DownloadWindow>? b) =>
        (a ?? []).SequenceEqual(b ?? []);
}
