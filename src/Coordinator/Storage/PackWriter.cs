
namespace MsdFleet.Coordinator.Storage;

/// <summary>
/// Appends new chunks, in arrival order, into a pack buffer and writes the pack when it is full.
/// Up to <see cref="MaxWritesInFlight"/> pack writes run in the background while the next buffer fills
/// (an object store answers each PUT with some latency), so memory stays at a few packs. Chunks the
/// store (or this writer) already holds are skipped: that is the dedup.
/// </summary>
public sealed class PackWriter : IAsyncDisposable
{
    private readonly ChunkStore _chunks;

    // The writer holds its buffers (one filling, the rest being written) from the process-wide page-aligned
    // pool and reuses them, so an upload costs a fixed amount of memory whatever its size.
    private readonly List<PageAlignedBuffers.Buffer> _rented = [];
    private readonly System.Threading.Channels.Channel<Memory<byte>> _free;
    private Memory<byte>? _buffer;
    private int _length;
    private List<PackEntry> _entries = [];
    public const int MaxWritesInFlight = 1;
    private readonly HashSet<UInt128> _pending = [];
    private readonly Queue<Task> _inFlight = new();

    public PackWriter(ChunkStore chunks)
    {
        _chunks = chunks;
        _free = System.Threading.Channels.Channel.CreateBounded<Memory<byte>>(MaxWritesInFlight + 1);
    }

    // Buffers are rented when first needed: a batch of already-stored chunks costs none, one pack's worth costs one.
    private async ValueTask<Memory<byte>> NextBufferAsync(CancellationToken cancellationToken)
    {
        if (_free.Reader.TryRead(out var free))
            return free;
        if (_rented.Count <= MaxWritesInFlight)
        {
            var buffer = PageAlignedBuffers.Rent();
            _rented.Add(buffer);
            return buffer.Memory;
        }
        return await _free.Reader.ReadAsync(cancellationToken);
    }

    public long NewBytes { get; private set; }

    /// <summary>Adds a chunk unless it is already stored; returns true when its bytes are new.</summary>
    public async Task<bool> AddAsync(byte[] id, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(id);
        var key = System.Buffers.Binary.BinaryPrimitives.ReadUInt128LittleEndian(id);
        if (_chunks.Contains(id) || !_pending.Add(key))
            return false;
        if (_length + data.Length > ChunkStore.PackTargetBytes)
            await FlushAsync(cancellationToken);
        _buffer ??= await NextBufferAsync(cancellationToken);
        data.CopyTo(_buffer.Value[_length..]);
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
        while (_inFlight.Count > 0)
            await _inFlight.Dequeue();
    }

    private async Task FlushAsync(CancellationToken cancellationToken)
    {
        while (_inFlight.Count >= MaxWritesInFlight)
            await _inFlight.Dequeue();
        if (_length == 0)
            return;
        var buffer = _buffer!.Value;
        var length = _length;
        var index = new PackIndex { Entries = _entries };
        _buffer = null;
        _length = 0;
        _entries = [];
        _inFlight.Enqueue(Task.Run(async () =>
        {
            try
            {
                await _chunks.WritePackAsync(buffer[..length], index, cancellationToken);
            }
            finally
            {
                _free.Writer.TryWrite(buffer);
            }
        }, cancellationToken));
    }

    public async ValueTask DisposeAsync()
    {
        while (_inFlight.Count > 0)
        {
            try
            {
                await _inFlight.Dequeue();
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                // The owner already failed; an unindexed or unreferenced pack is reclaimed by GC.
            }
        }
        foreach (var buffer in _rented)
            PageAlignedBuffers.Return(buffer);
        _rented.Clear();
    }
}
