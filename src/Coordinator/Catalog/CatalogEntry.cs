namespace MsdFleet.Coordinator.Catalog;

/// <summary>A catalog entry: a human name pointing at a digest, like a registry tag. Stored as JSON.</summary>
public sealed record CatalogEntry
{
    public required string Name { get; init; }
    public required string Digest { get; init; }
    public required long Size { get; init; }
    public required string Sha256 { get; init; }
    public required int ChunkCount { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    public MediaInfo? Media { get; init; }

    public static CatalogEntry For(string name, Protocol.Manifests.ImageDigest digest, Protocol.Manifests.ImageManifest manifest, MediaInfo? media, DateTimeOffset createdAt)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        return new CatalogEntry
        {
            Name = name,
            Digest = digest.ToString(),
            Size = manifest.Size,
            Sha256 = manifest.Sha256Hex,
            ChunkCount = manifest.Chunks.Count,
            CreatedAt = createdAt,
            Media = media,
        };
    }
}
