using MsdFleet.Protocol.IO;
using MsdFleet.Protocol;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.EdgeAgent.Storage;

/// <summary>
/// The agent's local storage root: <c>incoming/</c> (partial pulls with their journals), <c>images/</c>
/// (complete, verified images; the only files a LUN may point at) and <c>metadata/</c> (manifests and
/// the last accepted desired state, so the agent converges again after a reboot without the broker).
/// </summary>
public sealed class LocalImageStore
{
    public LocalImageStore(string root)
    {
        Root = Path.GetFullPath(root);
        Directory.CreateDirectory(IncomingPath);
        Directory.CreateDirectory(ImagesPath);
        Directory.CreateDirectory(MetadataPath);
    }

    public string Root { get; }
    public string IncomingPath => Path.Combine(Root, "incoming");
    public string ImagesPath => Path.Combine(Root, "images");
    public string MetadataPath => Path.Combine(Root, "metadata");

    public string ImagePath(ImageDigest digest) => Path.Combine(ImagesPath, digest.Hex + ".img");
    public string PartialPath(ImageDigest digest) => Path.Combine(IncomingPath, digest.Hex + ".part");
    public string JournalPath(ImageDigest digest) => Path.Combine(IncomingPath, digest.Hex + ".journal");
    private string ManifestPath(ImageDigest digest) => Path.Combine(MetadataPath, digest.Hex + ".manifest");
    private string DesiredPath => Path.Combine(MetadataPath, "desired.msgpack");

    public bool HasImage(ImageDigest digest) => File.Exists(ImagePath(digest));

    /// <summary>The digest of a file under images/, or null for any other path.</summary>
    public ImageDigest? DigestOfImagePath(string? path)
    {
        if (string.IsNullOrEmpty(path) || !string.Equals(Path.GetDirectoryName(Path.GetFullPath(path)), ImagesPath, StringComparison.Ordinal))
            return null;
        var name = Path.GetFileName(path);
        return name.EndsWith(".img", StringComparison.Ordinal) && ImageDigest.TryParse(ImageDigest.Prefix + name[..^4], out var digest) ? digest : null;
    }

    public IReadOnlyList<(ImageDigest Digest, long Size)> ListImages() =>
        Directory.EnumerateFiles(ImagesPath, "*.img")
            .Select(p => (Digest: DigestOfImagePath(p), Size: new FileInfo(p).Length))
            .Where(x => x.Digest is not null)
            .Select(x => (x.Digest!.Value, x.Size))
            .ToList();

    public async Task SaveManifestAsync(ImageDigest digest, byte[] bytes, CancellationToken cancellationToken) =>
        await AtomicFile.WriteAsync(ManifestPath(digest), bytes, cancellationToken);

    /// <summary>A cached manifest, or null when missing or when its bytes no longer hash to the digest.</summary>
    public async Task<ImageManifest?> LoadManifestAsync(ImageDigest digest, CancellationToken cancellationToken)
    {
        var path = ManifestPath(digest);
        if (!File.Exists(path))
            return null;
        var bytes = await File.ReadAllBytesAsync(path, cancellationToken);
        if (ImageDigest.Compute(bytes) != digest)
            return null;
        try
        {
            return ImageManifest.Parse(bytes);
        }
        catch (ProtocolFormatException)
        {
            return null;
        }
    }

    public Task SaveDesiredAsync(DesiredState state, CancellationToken cancellationToken) =>
        AtomicFile.WriteAsync(DesiredPath, ProtocolSerializer.Serialize(state), cancellationToken);

    public DesiredState? LoadDesired()
    {
        if (!File.Exists(DesiredPath))
            return null;
        try
        {
            return ProtocolSerializer.Deserialize<DesiredState>(File.ReadAllBytes(DesiredPath));
        }
        catch (ProtocolFormatException)
        {
            return null;
        }
    }

    public (long Free, long Total) Space()
    {
        var drive = new DriveInfo(Root);
        return (drive.AvailableFreeSpace, drive.TotalSize);
    }
}
