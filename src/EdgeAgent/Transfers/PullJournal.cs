using System.Buffers.Binary;
using System.Security.Cryptography;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>
/// Append-only record of chunks whose bytes are verified and durable in the partial file. Records are
/// written only after the data they describe has been flushed, and each carries a check value bound to
/// the chunk's id, so a torn or stale tail after a power cut is detected and dropped, never trusted.
/// Layout: 8-byte magic, 32-byte manifest digest, then 12-byte records {u32 chunk index, 8-byte check}.
/// </summary>
public sealed class PullJournal : IDisposable
{
    private static readonly byte[] Magic = "MSDJRNL1"u8.ToArray();
    private const int HeaderLength = 8 + 32;
    private const int RecordLength = 12;
    private readonly FileStream _stream;
    private readonly ImageManifest _manifest;

    private PullJournal(FileStream stream, ImageManifest manifest, HashSet<int> done)
    {
        _stream = stream;
        _manifest = manifest;
        Done = done;
    }

    /// <summary>Chunk indexes the journal proves complete.</summary>
    public IReadOnlySet<int> Done { get; }

    /// <summary>Opens (or starts) the journal of <paramref name="digest"/>, dropping any torn tail.</summary>
    public static PullJournal Open(string path, ImageDigest digest, ImageManifest manifest)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        var stream = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        var done = new HashSet<int>();
        var header = new byte[HeaderLength];
        Magic.CopyTo(header, 0);
        Convert.FromHexString(digest.Hex).CopyTo(header, 8);
        var existing = new byte[HeaderLength];
        var valid = stream.Length >= HeaderLength && stream.Read(existing) == HeaderLength && existing.AsSpan().SequenceEqual(header);
        if (!valid)
        {
            stream.SetLength(0);
            stream.Write(header);
            stream.Flush(flushToDisk: true);
            return new PullJournal(stream, manifest, done);
        }
        var record = new byte[RecordLength];
        long goodLength = HeaderLength;
        while (stream.Read(record) == RecordLength)
        {
            var index = BinaryPrimitives.ReadInt32LittleEndian(record);
            if (index < 0 || index >= manifest.Chunks.Count || !record.AsSpan(4).SequenceEqual(Check(index, manifest.Chunks[index].Id)))
                break;
            done.Add(index);
            goodLength += RecordLength;
        }
        stream.SetLength(goodLength);
        stream.Position = goodLength;
        return new PullJournal(stream, manifest, done);
    }

    /// <summary>Appends records for chunks whose data the caller has already flushed to disk.</summary>
    public void Commit(IReadOnlyCollection<int> indexes)
    {
        ArgumentNullException.ThrowIfNull(indexes);
        var buffer = new byte[indexes.Count * RecordLength];
        var at = 0;
        foreach (var index in indexes)
        {
            BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(at), index);
            Check(index, _manifest.Chunks[index].Id).CopyTo(buffer.AsSpan(at + 4));
            at += RecordLength;
        }
        _stream.Write(buffer);
        _stream.Flush(flushToDisk: true);
        foreach (var index in indexes)
            ((HashSet<int>)Done).Add(index);
    }

    public void Dispose() => _stream.Dispose();

    private static byte[] Check(int index, byte[] chunkId)
    {
        Span<byte> input = stackalloc byte[36];
        BinaryPrimitives.WriteInt32LittleEndian(input, index);
        chunkId.CopyTo(input[4..]);
        return SHA256.HashData(input)[..8];
    }
}
