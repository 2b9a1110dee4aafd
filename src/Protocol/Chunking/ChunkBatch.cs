using System.Security.Cryptography;

namespace MsdFleet.Protocol.Chunking;

/// <summary>
/// Chunks copied back to back into one reusable buffer, the unit every hashing pipeline passes between its
/// stages (the Coordinator's ingest and chunk receiver, msdctl's push, the agent's snapshots): the reader fills
/// it, <see cref="StartHashingIds"/> computes the chunk ids on the thread pool, and the in-order consumers read
/// it. <see cref="Holders"/> counts the consumers still reading it; the last one hands it back for reuse.
/// </summary>
public sealed class ChunkBatch(byte[] buffer)
{
    public byte[] Buffer { get; } = buffer;
    public List<int> Lengths { get; } = [];
    public int Used { get; set; }

    /// <summary>The chunk ids (SHA-256), in order, once <see cref="StartHashingIds"/> was called.</summary>
    public Task<byte[][]>? Ids { get; private set; }

    /// <summary>A caller-defined number (msdctl: the part's number in its push).</summary>
    public int Number { get; set; }

    private int _holders;

    /// <summary>Consumers still reading the batch; set before handing it out, decremented by each with <see cref="Release"/>.</summary>
    public int Holders
    {
        get => Volatile.Read(ref _holders);
        set => Volatile.Write(ref _holders, value);
    }

    /// <summary>Empties the batch for reuse.</summary>
    public ChunkBatch Reset()
    {
        Lengths.Clear();
        Used = 0;
        Ids = null;
        Number = 0;
        return this;
    }

    /// <summary>Copies one chunk in after the ones already held; the buffer must have room.</summary>
    public void Add(ReadOnlySpan<byte> chunk)
    {
        chunk.CopyTo(Buffer.AsSpan(Used));
        Used += chunk.Length;
        Lengths.Add(chunk.Length);
    }

    /// <summary>Starts hashing the chunks on the thread pool (the batch must not change until <see cref="Ids"/> completes).</summary>
    public void StartHashingIds()
    {
        var lengths = Lengths.ToArray();
        var buffer = Buffer;
        Ids = Task.Run(() =>
        {
            var ids = new byte[lengths.Length][];
            var offset = 0;
            for (var i = 0; i < lengths.Length; i++)
            {
                ids[i] = SHA256.HashData(buffer.AsSpan(offset, lengths[i]));
                offset += lengths[i];
            }
            return ids;
        });
    }

    /// <summary>One consumer is done; true when it was the last (the caller then reuses the batch).</summary>
    public bool Release() => Interlocked.Decrement(ref _holders) == 0;
}

/// <summary>
/// A pipeline's fixed ring of batches and the free list its reader takes them from: <see cref="TakeAsync"/> waits for
/// a free batch (that wait is the pipeline's back-pressure), <see cref="Release"/> gives it back once its last
/// consumer is done. Buffers are rented from the shared array pool (unless <c>pooled</c> is false) and returned on
/// dispose, so consecutive uploads reuse the same memory instead of leaving megabytes per request to the GC's
/// large-object heap (which grew the Coordinator's resident set by ~10 MB per operation until a full collection).
/// </summary>
public sealed class ChunkBatchRing : IDisposable
{
    private readonly List<ChunkBatch> _batches = [];
    private readonly System.Threading.Channels.Channel<ChunkBatch> _free;
    private readonly bool _pooled;

    public ChunkBatchRing(int count, int capacity, bool pooled = true)
    {
        _pooled = pooled;
        _free = System.Threading.Channels.Channel.CreateBounded<ChunkBatch>(count);
        for (var i = 0; i < count; i++)
        {
            var batch = new ChunkBatch(pooled ? System.Buffers.ArrayPool<byte>.Shared.Rent(capacity) : new byte[capacity]);
            _batches.Add(batch);
            _free.Writer.TryWrite(batch);
        }
    }

    /// <summary>A free, emptied batch; waits while every batch is in the pipeline.</summary>
    public async ValueTask<ChunkBatch> TakeAsync(CancellationToken cancellationToken) =>
        (await _free.Reader.ReadAsync(cancellationToken).ConfigureAwait(false)).Reset();

    /// <summary>One consumer is done with <paramref name="batch"/>; the last one makes it free again.</summary>
    public void Release(ChunkBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.Release())
            _free.Writer.TryWrite(batch);
    }

    /// <summary>Call only once nothing reads the batches any more.</summary>
    public void Dispose()
    {
        if (_pooled)
            foreach (var batch in _batches)
                System.Buffers.ArrayPool<byte>.Shared.Return(batch.Buffer);
        _batches.Clear();
    }
}
