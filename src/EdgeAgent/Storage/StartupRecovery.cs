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
public sealed partial class StartupRecovery(LocalImageStore store, WorkingCopyStore workingCopies, IGadgetDriver gadget, ImageCache cache, ILogger<StartupRecovery> logger)
{
    public async Task RunAsync(DesiredState? desired, CancellationToken cancellationToken)
    {
        foreach (var temp in Directory.EnumerateFiles(store.MetadataPath, "*.tmp"))
            File.Delete(temp);

        var drives = await gadget.ReadDrivesAsync(cancellationToken);
        // A working copy half-made when the agent died was never presented: remove it. Finished copies stay.
        foreach (var name in workingCopies.RemoveLeftovers(path => drives.Any(d => d.File == path)))
            Log.Removed(logger, "working/" + name);

        // A pull of a drive's or a staged image resumes; anything else half-pulled is dropped.
        var wanted = (desired?.Drives ?? []).Select(d => d.ImageDigest).OfType<string>().Concat((desired?.Prefetch ?? []).Select(p => p.ImageDigest))
            .ToHashSet(StringComparer.Ordinal);
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
                foreach (var drive in drives.Where(d => store.DigestOfImagePath(d.File) == digest))
                    await gadget.EjectAsync(drive.Index, cancellationToken);
                await QuarantineAsync(digest, manifest is null ? "no valid manifest" : $"size {size} instead of {manifest.Size}", cancellationToken);
            }
        }
        foreach (var file in Directory.EnumerateFiles(store.ImagesPath).Where(f => store.DigestOfImagePath(f) is null))
        {
            File.Delete(file); // not an image name this agent writes: a leftover, never attachable
            Log.Removed(logger, Path.GetFileName(file));
        }

        foreach (var drive in drives)
        {
            if (store.DigestOfImagePath(drive.File) is not { } attached || !store.HasImage(attached))
                continue;
            if (await cache.CheckAsync(attached, cancellationToken) is { } problem)
            {
                await gadget.EjectAsync(drive.Index, cancellationToken); // first take it away from the server, then move the file
                await cache.QuarantineAsync(attached, problem, cancellationToken);
                Log.EjectedUnverified(logger, drive.Index, attached.ToString());
            }
        }
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
