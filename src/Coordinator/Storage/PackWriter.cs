using System.Buffers;

namespace MsdFleet.Coordinator.Storage;

/// <summary>
/// Appends new chunks, in arrival order, into a pack buffer and writes the pack when it is full.
/// One pack write may run in the background while the next buffer fills, so memory stays at two
/// packs. Chunks the store (or this writer) already holds are skipped: that is the dedup.
/// </summary>
public sealed class PackWriter(ChunkStore chunks) : IAsyncDisposable
{
    private byte[] _buffer = ArrayPool<byte>.Shared.Rent(ChunkStore.PackTargetBytes + 1024 * 1024);
    private int _length;
    private List<PackEntry> _entries = [];
    private readonly HashSet<UInt128> _pending = [];
    private Task? _inFlight;

    public long NewBytes { get; private set; }

    /// <summary>Adds a chunk unless it is already stored; returns true when its bytes are new.</summary>
    public async Task<bool> AddAsync(byte[] id, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(id);
        var key = System.Buffers.Binary.BinaryPrimitives.ReadUInt128LittleEndian(id);
        if (chunks.Contains(id) || !_pending.Add(key))
            return false;
        if (_length + data.Length > _buffer.Length)
            await FlushAsync(cancellationToken);
        data.CopyTo(_buffer.AsMemory(_length));
        _entries.Add(new PackEntry { Id = id, Offset = _length, Length = data.Length });
        _length += data.Length;
        NewBytes += data.Length;
        if (_length >= ChunkStore.PackTargetBytes)
            await FlushAsync(cancellationToken);
        return true;
    }

    /// <summary>Writes what is buffered; when it returns, every added chunk is stored.</summary>
    public async Task CompleteAsync(CancellationToken cancellationToken)
    {
        await FlushAsync(cancellationToken);
        if (_inFlight is not null)
            await _inFlight;
        _inFlight = null;
    }

    private async Task FlushAsync(CancellationToken cancellationToken)
    {
        if (_inFlight is not null)
            await _inFlight;
        _inFlight = null;
        if (_length == 0)
            return;
        var buffer = _buffer;
        var length = _length;
        var index = new PackIndex { Entries = _entries };
        _buffer = ArrayPool<byte>.Shared.Rent(ChunkStore.PackTargetBytes + 1024 * 1024);
        _length = 0;
        _entries = [];
        _inFlight = Task.Run(async () =>
        {
            try
            {
                await chunks.WritePackAsync(buffer.AsMemory(0, length), index, cancellationToken);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }, cancellationToken);
    }

    public async ValueTask DisposeAsync()
    {
        if (_inFlight is not null)
        {
            try
            {
                await _inFlight;
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                // The owner already failed; an unindexed or unreferenced pack is reclaimed by GC.
            }
        }
        ArrayPool<byte>.Shared.Return(_buffer);
    }
}
