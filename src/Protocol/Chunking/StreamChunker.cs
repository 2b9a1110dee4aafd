using System.Buffers;
using System.Runtime.CompilerServices;

namespace MsdFleet.Protocol.Chunking;

/// <summary>
/// Cuts a stream into content-defined chunks with one pooled buffer, so memory stays constant no
/// matter how large the image is. Each yielded chunk is valid only until the next one is requested.
/// </summary>
public static class StreamChunker
{
    public static async IAsyncEnumerable<ReadOnlyMemory<byte>> ReadChunksAsync(
        Stream source, ContentChunker chunker, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(chunker);
        var max = chunker.Parameters.MaxSize;
        var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(1024 * 1024, 4 * max));
        try
        {
            int start = 0, end = 0;
            var eof = false;
            while (true)
            {
                if (!eof && end - start < max)
                {
                    // Slide the unconsumed tail to the front and refill; cut decisions need MaxSize bytes.
                    if (start > 0)
                    {
                        Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
                        end -= start;
                        start = 0;
                    }
                    while (end < buffer.Length)
                    {
                        var read = await source.ReadAsync(buffer.AsMemory(end), cancellationToken).ConfigureAwait(false);
                        if (read == 0)
                        {
                            eof = true;
                            break;
                        }
                        end += read;
                    }
                }
                if (end == start)
                    yield break;
                var length = chunker.NextChunkLength(buffer.AsSpan(start, end - start), eof);
                yield return buffer.AsMemory(start, length);
                start += length;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
