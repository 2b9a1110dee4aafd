using MessagePack;

namespace MsdFleet.Protocol.Manifests;

/// <summary>One chunk of an image, in image order: its SHA-256 (also its storage id) and length.</summary>
[MessagePackObject]
public sealed record ManifestChunk
{
    [Key(0)] public required byte[] Id { get; init; }
    [Key(1)] public required int Length { get; init; }

    /// <summary>Lowercase hex of <see cref="Id"/>; the chunk's object name.</summary>
    [IgnoreMember]
    public string IdHex => Convert.ToHexStringLower(Id);
}
