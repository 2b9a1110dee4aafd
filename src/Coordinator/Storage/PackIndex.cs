using MessagePack;

namespace MsdFleet.Coordinator.Storage;

/// <summary>The table of contents of one pack object, stored beside it as <c>packs/&lt;id&gt;.idx</c>.</summary>
[MessagePackObject]
public sealed record PackIndex
{
    [Key(0)] public required IReadOnlyList<PackEntry> Entries { get; init; }
}

[MessagePackObject]
public sealed record PackEntry
{
    [Key(0)] public required byte[] Id { get; init; }
    [Key(1)] public required long Offset { get; init; }
    [Key(2)] public required int Length { get; init; }
}
