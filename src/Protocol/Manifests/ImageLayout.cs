using MessagePack;

namespace MsdFleet.Protocol.Manifests;

/// <summary>
/// Where an image's chunks can be fetched right now: a list of source URLs (packs in the object
/// store, presigned or signed by the Coordinator, so the Coordinator need not be in the data path) and,
/// for every chunk of the manifest in order, which source holds it at which offset. A layout is
/// untrusted and short-lived: every byte fetched through it is still checked against the manifest.
/// Keys are wire format: append only.
/// </summary>
[MessagePackObject]
public sealed record ImageLayout
{
    /// <summary>Absolute URLs, or URLs relative to the Coordinator's base URL.</summary>
    [Key(0)] public required IReadOnlyList<string> Sources { get; init; }
    [Key(1)] public required IReadOnlyList<ChunkLocation> Chunks { get; init; }
    [Key(2)] public long ExpiresAtUnixMs { get; init; }
}

[MessagePackObject]
public readonly record struct ChunkLocation
{
    [Key(0)] public int Source { get; init; }
    [Key(1)] public long Offset { get; init; }
}
