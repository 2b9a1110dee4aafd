using MessagePack;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.Protocol.Manifests;

/// <summary>
/// The ordered list of chunks that make an image, with the whole image's size and SHA-256 and the
/// chunker parameters. Its MessagePack bytes are hashed into the image's <see cref="ImageDigest"/>, so
/// once a reader has checked the digest it can trust every chunk id below it.
/// </summary>
[MessagePackObject]
public sealed record ImageManifest
{
    public const int CurrentFormat = 1;

    /// <summary>Upper bound on a manifest's encoded size (a 1 TiB image at 16 KiB chunks needs less).</summary>
    public const int MaxEncodedBytes = 64 * 1024 * 1024;

    [Key(0)] public int Format { get; init; } = CurrentFormat;
    [Key(1)] public required long Size { get; init; }
    [Key(2)] public required byte[] Sha256 { get; init; }
    [Key(3)] public required ChunkerParameters Chunker { get; init; }
    [Key(4)] public required IReadOnlyList<ManifestChunk> Chunks { get; init; }

    [IgnoreMember]
    public string Sha256Hex => Convert.ToHexStringLower(Sha256);

    public byte[] ToBytes() => ProtocolSerializer.Serialize(this);

    /// <summary>Decodes and validates a manifest; any inconsistency is a <see cref="ProtocolFormatException"/>.</summary>
    public static ImageManifest Parse(ReadOnlyMemory<byte> bytes)
    {
        if (bytes.Length > MaxEncodedBytes)
            throw new ProtocolFormatException($"Manifest is {bytes.Length} bytes; the limit is {MaxEncodedBytes}.");
        var manifest = ProtocolSerializer.Deserialize<ImageManifest>(bytes, MaxEncodedBytes);
        manifest.Validate();
        return manifest;
    }

    /// <summary>Start offset of every chunk, plus the image size as a final sentinel.</summary>
    public long[] ComputeOffsets()
    {
        var offsets = new long[Chunks.Count + 1];
        long position = 0;
        for (var i = 0; i < Chunks.Count; i++)
        {
            offsets[i] = position;
            position += Chunks[i].Length;
        }
        offsets[^1] = position;
        return offsets;
    }

    public void Validate()
    {
        if (Format != CurrentFormat)
            throw new ProtocolFormatException($"Unsupported manifest format {Format}.");
        if (Chunker is null || Chunks is null || Sha256 is null)
            throw new ProtocolFormatException("Manifest is missing required fields.");
        Chunker.Validate();
        if (Sha256.Length != 32)
            throw new ProtocolFormatException("Manifest image SHA-256 must be 32 bytes.");
        if (Size < 0)
            throw new ProtocolFormatException("Manifest size is negative.");
        long total = 0;
        for (var i = 0; i < Chunks.Count; i++)
        {
            var chunk = Chunks[i] ?? throw new ProtocolFormatException($"Chunk {i} is null.");
            if (chunk.Id is null || chunk.Id.Length != 32)
                throw new ProtocolFormatException($"Chunk {i} id must be a 32-byte SHA-256.");
            if (chunk.Length <= 0 || chunk.Length > Chunker.MaxSize)
                throw new ProtocolFormatException($"Chunk {i} length {chunk.Length} is outside 1..{Chunker.MaxSize}.");
            total += chunk.Length;
        }
        if (total != Size)
            throw new ProtocolFormatException($"Chunk lengths add up to {total} but the manifest size is {Size}.");
    }
}
