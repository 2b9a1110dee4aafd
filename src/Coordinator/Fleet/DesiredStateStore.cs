using System.Collections.Concurrent;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.Coordinator.Fleet;

/// <summary>
/// Durable desired state per agent, under <c>fleet/desired/&lt;agentId&gt;</c>, stored as the exact
/// MessagePack bytes that are published. This store, not the broker, is the source of truth. All changes
/// run under one lock, which also makes "delete an image only when no desired state uses it" atomic.
/// </summary>
public sealed class DesiredStateStore(IObjectStore store, TimeProvider time) : IDisposable
{
    private readonly ConcurrentDictionary<string, DesiredState> _states = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _lock = new(1, 1);

    public async Task LoadAsync(CancellationToken cancellationToken)
    {
        await foreach (var key in store.ListAsync(ObjectKeys.DesiredPrefix, cancellationToken))
        {
            var bytes = await store.GetBytesAsync(key, ProtocolSerializer.MaxMessageBytes, cancellationToken);
            if (bytes is not null)
                _states[key[ObjectKeys.DesiredPrefix.Length..]] = ProtocolSerializer.Deserialize<DesiredState>(bytes);
        }
    }

    public void Dispose() => _lock.Dispose();

    /// <summary>Raised after an agent's desired state was stored.</summary>
    public event Action<string>? Changed;

    public DesiredState? Get(string agentId) => _states.GetValueOrDefault(agentId);

    public IReadOnlyDictionary<string, DesiredState> All => _states;

    public bool IsInUse(ImageDigest digest) =>
        _states.Values.Any(s => s.Drives.Any(d => d.ImageDigest == digest.ToString()));

    /// <summary>Runs <paramref name="action"/> while no desired state can change.</summary>
    public async Task<T> RunExclusiveAsync<T>(Func<Task<T>> action, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(action);
        await _lock.WaitAsync(cancellationToken);
        try
        {
            return await action();
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>Replaces one drive and bumps the generation; returns the new state and its bytes, already durable.</summary>
    public Task<(DesiredState State, byte[] Bytes)> SetDriveAsync(string agentId, DesiredDrive drive, CancellationToken cancellationToken) =>
        RunExclusiveAsync(() => SetDriveLockedAsync(agentId, drive, cancellationToken), cancellationToken);

    /// <summary>Sets (or with null clears) the agent's pull bandwidth override; bumps the generation.</summary>
    public Task<(DesiredState State, byte[] Bytes)> SetBandwidthAsync(string agentId, long? bytesPerSecond, CancellationToken cancellationToken) =>
        RunExclusiveAsync(async () =>
        {
            var current = Get(agentId);
            var next = new DesiredState
            {
                Generation = (current?.Generation ?? 0) + 1,
                Drives = current?.Drives ?? [],
                IssuedAtUnixMs = time.GetUtcNow().ToUnixTimeMilliseconds(),
                MaxBytesPerSecond = bytesPerSecond,
                AgentId = agentId,
            };
            return await SaveLockedAsync(agentId, next, cancellationToken);
        }, cancellationToken);

    private async Task<(DesiredState State, byte[] Bytes)> SaveLockedAsync(string agentId, DesiredState next, CancellationToken cancellationToken)
    {
        var bytes = ProtocolSerializer.Serialize(next);
        await store.PutAsync(ObjectKeys.Desired(agentId), bytes, cancellationToken);
        await store.FlushAsync(cancellationToken);
        _states[agentId] = next;
        Changed?.Invoke(agentId);
        return (next, bytes);
    }

    /// <summary>Like <see cref="SetDriveAsync"/>, for callers already inside <see cref="RunExclusiveAsync"/>.</summary>
    public async Task<(DesiredState State, byte[] Bytes)> SetDriveLockedAsync(string agentId, DesiredDrive drive, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(drive);
        var current = Get(agentId);
        var drives = (current?.Drives ?? []).Where(d => d.Index != drive.Index).Append(drive).OrderBy(d => d.Index).ToList();
        var next = new DesiredState
        {
            Generation = (current?.Generation ?? 0) + 1,
            Drives = drives,
            IssuedAtUnixMs = time.GetUtcNow().ToUnixTimeMilliseconds(),
            MaxBytesPerSecond = current?.MaxBytesPerSecond,
            AgentId = agentId,
        };
        return await SaveLockedAsync(agentId, next, cancellationToken);
    }
}
