using MsdFleet.EdgeAgent.Gadget;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Storage;

/// <summary>
/// Runs once when the agent starts, before the first reconcile pass, so nothing left by a crash or a
/// previous version is trusted blindly: temporary files are removed; partial pulls nobody wants any more
/// are removed (wanted ones resume and are re-verified chunk by chunk); a journal without its data is
/// dropped; a cached image without a valid manifest or of the wrong size is quarantined; and an image a
/// previous run left attached to a LUN is verified — if it fails, the LUN is ejected and the file
/// quarantined, so the server never keeps reading bytes nobody vouches for.
/// </summary>
public sealed partial class StartupRecovery(LocalImageStore store, IGadgetDriver gadget, ImageCache cache, ILogger<StartupRecovery> logger)
{
    private const int MaxLuns = 8;

    public async Task RunAsync(DesiredState? desired, CancellationToken cancellationToken)
    {
        foreach (var temp in Directory.EnumerateFiles(store.MetadataPath, "*.tmp"))
            File.Delete(temp);

        var wanted = (desired?.Drives ?? []).Select(d => d.ImageDigest).OfType<string>().ToHashSet(StringComparer.Ordinal);
        foreach (var file in Directory.EnumerateFiles(store.IncomingPath))
        {
            var name = Path.GetFileName(file);
            var hex = name.Split('.')[0];
            var known = ImageDigest.TryParse(ImageDigest.Prefix + hex, out var digest);
            var stray = !known
                || (name.EndsWith(".journal", StringComparison.Ordinal) && !File.Exists(store.PartialPath(digest)))
                || !wanted.Contains(digest.ToString());
            if (stray)
            {
                File.Delete(file);
                Log.Removed(logger, name);
            }
        }

        foreach (var (digest, size) in store.ListImages())
        {
            var manifest = await store.LoadManifestAsync(digest, cancellationToken);
            if (manifest is null || manifest.Size != size)
            {
                if (IsAttached(digest, out var lun))
                    gadget.Eject(lun);
                await QuarantineAsync(digest, manifest is null ? "no valid manifest" : $"size {size} instead of {manifest.Size}", cancellationToken);
            }
        }
        foreach (var file in Directory.EnumerateFiles(store.ImagesPath).Where(f => store.DigestOfImagePath(f) is null))
        {
            File.Delete(file); // not an image name this agent writes: a leftover, never attachable
            Log.Removed(logger, Path.GetFileName(file));
        }

        for (var lun = 0; lun < MaxLuns; lun++)
        {
            if (store.DigestOfImagePath(gadget.ReadLun(lun)?.File) is not { } attached)
                continue;
            if (await cache.CheckAsync(attached, cancellationToken) is { } problem)
            {
                gadget.Eject(lun); // first take it away from the server, then move the file
                await cache.QuarantineAsync(attached, problem, cancellationToken);
                Log.EjectedUnverified(logger, lun, attached.ToString());
            }
        }
    }

    private bool IsAttached(ImageDigest digest, out int lun)
    {
        for (lun = 0; lun < MaxLuns; lun++)
            if (store.DigestOfImagePath(gadget.ReadLun(lun)?.File) == digest)
                return true;
        return false;
    }

    private Task QuarantineAsync(ImageDigest digest, string why, CancellationToken cancellationToken) =>
        cache.QuarantineAsync(digest, why, cancellationToken);

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Startup: removed leftover {File}")]
        public static partial void Removed(ILogger logger, string file);

        [LoggerMessage(2, LogLevel.Error, "Startup: LUN {Lun} held {Digest}, which failed verification; ejected and quarantined")]
        public static partial void EjectedUnverified(ILogger logger, int lun, string digest);
    }
}
