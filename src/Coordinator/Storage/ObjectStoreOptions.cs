using System.ComponentModel.DataAnnotations;

namespace MsdFleet.Coordinator.Storage;

/// <summary>Bound from <c>Storage</c>. Only the filesystem backend exists so far; S3 plugs in behind <see cref="IObjectStore"/>.</summary>
public sealed class ObjectStoreOptions
{
    public const string Section = "Storage";

    [Required, RegularExpression("^(filesystem)$", ErrorMessage = "Storage:Backend must be 'filesystem'.")]
    public string Backend { get; set; } = "filesystem";

    /// <summary>Root folder of the filesystem backend.</summary>
    [Required(ErrorMessage = "Storage:Path must name a folder for the filesystem store.")]
    public string Path { get; set; } = "data/store";
}
