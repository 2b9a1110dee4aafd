using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace MsdFleet.Coordinator.Storage;

/// <summary>
/// Pack-sized buffers that start on a page boundary (so the filesystem store can write them with O_DIRECT),
/// in native memory, shared by every upload of the process. A few are kept between uploads; more are made when
/// uploads overlap and freed when they are returned beyond that, so the Coordinator's memory does not grow
/// with the number of uploads it has served (a fresh 2 × 16 MiB per request did, through the GC's large heaps).
/// </summary>
public static class PageAlignedBuffers
{
    public const int Alignment = 4096;
    private const int KeptFree = 2;
    private static readonly ConcurrentBag<Buffer> Free = [];
    private static int _freeCount;

    /// <summary>A buffer of <see cref="ChunkStore.PackTargetBytes"/>; give it back with <see cref="Return"/>.</summary>
    public static Buffer Rent()
    {
        if (Free.TryTake(out var buffer))
        {
            Interlocked.Decrement(ref _freeCount);
            return buffer;
        }
        return new Buffer(ChunkStore.PackTargetBytes);
    }

    public static void Return(Buffer buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        if (Interlocked.Increment(ref _freeCount) <= KeptFree)
        {
            Free.Add(buffer);
            return;
        }
        Interlocked.Decrement(ref _freeCount);
        ((IDisposable)buffer).Dispose();
    }

    /// <summary>Native, page-aligned memory exposed as <see cref="Memory{T}"/>.</summary>
    public sealed unsafe class Buffer : MemoryManager<byte>
    {
        private byte* _pointer;
        private readonly int _length;

        internal Buffer(int length)
        {
            _length = length;
            _pointer = (byte*)NativeMemory.AlignedAlloc((nuint)length, Alignment);
        }

        public override Span<byte> GetSpan() => new(_pointer, _length);

        public override MemoryHandle Pin(int elementIndex = 0) => new(_pointer + elementIndex);

        public override void Unpin()
        {
        }

        protected override void Dispose(bool disposing)
        {
            if (_pointer is null)
                return;
            NativeMemory.AlignedFree(_pointer);
            _pointer = null;
        }
    }
}
