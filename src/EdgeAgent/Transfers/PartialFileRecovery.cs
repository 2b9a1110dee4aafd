using System.Buffers;
using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;
using MsdFleet.EdgeAgent.Storage;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>
/// After a crash, chunks written after the last journal commit are usually still on disk (a killed
/// process loses no page cache). Each such chunk is re-hashed — only in regions the file really holds
/// data, never the ones the journal already proves — and journaled after an fdatasync if it matches, so
/// a kill costs only the bytes that were in flight. After a power cut a lost chunk simply fails its hash
/// and is fetched again.
/// </summary>
public sealed partial class PartialFileRecovery(TimeProvider time, ILogger<PartialFileRecovery> logger)
{
    public void Recover(ImageManifest manifest, long[] offsets, SafeFileHandle handle, PullJournal journal)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        ArgumentNullException.ThrowIfNull(offsets);
        ArgumentNullException.ThrowIfNull(journal);
        var started = time.GetTimestamp();
        var data = SparseRegions.DataRanges(handle, manifest.Size);
        var recovered = new List<int>();
        var buffer = ArrayPool<byte>.Shared.Rent(manifest.Chunker.MaxSize);
        try
        {
            for (var i = 0; i < manifest.Chunks.Count; i++)
            {
                var chunk = manifest.Chunks[i];
                if (journal.Done.Contains(i) || !SparseRegions.Overlaps(data, offsets[i], offsets[i + 1]))
                    continue;
                var span = buffer.AsSpan(0, chunk.Length);
                if (RandomAccess.Read(handle, span, offsets[i]) == chunk.Length && SHA256.HashData(span).AsSpan().SequenceEqual(chunk.Id))
                    recovered.Add(i);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        if (recovered.Count > 0)
        {
            RandomAccess.FlushToDisk(handle);
            journal.Commit(recovered);
        }
        Log.Recovered(logger, recovered.Count, time.GetElapsedTime(started).TotalMilliseconds);
    }

    private static partial class Log
    {
        [LoggerMessage(4, LogLevel.Information, "Resume: {Count} chunks written after the last journal commit verified and kept ({Milliseconds:0} ms)")]
        public static partial void Recovered(ILogger logger, int count, double milliseconds);
    }
}
