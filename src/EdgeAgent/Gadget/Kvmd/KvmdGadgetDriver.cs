using Microsoft.Extensions.Logging;

namespace MsdFleet.EdgeAgent.Gadget.Kvmd;

/// <summary>
/// <c>Gadget:Driver=kvmd</c>: presents drives on a stock PiKVM without touching what kvmd owns. Drive 0 is
/// kvmd's own MSD (mass_storage.usb0, LUN 0), driven only through kvmd's HTTP API so kvmd's UI, its
/// storage remounts and its state stay right; drives 1… are kvmd's "extra drives" (mass_storage.usb1…),
/// which kvmd has no API for and never touches, delegated to <c>extraDrives</c> (a configfs driver) and
/// renumbered after drive 0. kvmd-otg builds the gadget, so this driver never does.
/// </summary>
/// <remarks>
/// <para>
/// The driver builds and owns its HttpClient (<see cref="KvmdClient.CreateHttpClient"/>: unix socket via
/// <see cref="SocketsHttpHandler.ConnectCallback"/>, or <see cref="KvmdOptions.Url"/>); register it as a
/// singleton so the container disposes it.
/// </para>
/// <para>
/// Checked against pikvm/kvmd f14596e8 (2026-08-06, after the 2026-05 MSD rewrite):
/// <c>kvmd/apps/kvmd/api/msd.py</c> (<c>__state_handler</c>, <c>__set_params_handler</c>: image/cdrom/rw as
/// query parameters through <c>valid_msd_image_name</c> and <c>valid_bool</c>; <c>__set_connected_handler</c>);
/// <c>kvmd/plugins/msd/otg/__init__.py</c> (<c>Plugin.set_params</c>: refused while connected, rw forced off
/// for cdrom or a non-writable image; <c>Plugin.set_connected</c>: MsdImageNotSelected, MsdUnknownImageError,
/// disconnect keeps the selection; <c>_State.check_online_*</c>; <c>Plugin.get_state</c>: online needs the
/// drive state and the function linked into the configuration);
/// <c>kvmd/plugins/msd/otg/storage.py</c> (<c>Storage.reload</c>, <c>get_image_by_name</c>, <c>get_image_by_path</c>:
/// names are paths relative to the storage root; <c>Image.__is_writable</c>: *.iso never is);
/// <c>kvmd/plugins/msd/otg/fs.py</c> (<c>_list_dir</c>: dot files, lost+found and symlinks are never listed);
/// <c>kvmd/plugins/msd/otg/drive.py</c> (<c>Drive</c> is hard-wired to mass_storage.usb0/lun.0; EBUSY is
/// MsdLockedError); <c>kvmd/plugins/msd/__init__.py</c> (the error classes); <c>kvmd/validators/os.py</c>
/// (<c>valid_printable_filename</c>); <c>kvmd/plugins/msd/disabled.py</c> (<c>enabled: false</c>).
/// </para>
/// </remarks>
public sealed partial class KvmdGadgetDriver : IGadgetDriver, IDisposable
{
    private readonly KvmdOptions _options;
    private readonly IGadgetDriver? _extraDrives;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly KvmdClient _kvmd;
    private readonly string _storageRoot;
    // kvmd's drive is one state machine: this agent's own steps on it must not interleave.
    private readonly SemaphoreSlim _mainDrive = new(1, 1);

    public KvmdGadgetDriver(KvmdOptions options, IGadgetDriver? extraDrives, TimeProvider timeProvider, ILogger<KvmdGadgetDriver> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(timeProvider);
        ArgumentNullException.ThrowIfNull(logger);
        _options = options;
        _extraDrives = extraDrives;
        _time = timeProvider;
        _logger = logger;
        _kvmd = new KvmdClient(KvmdClient.CreateHttpClient(options), options, timeProvider);
        _storageRoot = Path.TrimEndingDirectorySeparator(Path.GetFullPath(options.StorageRoot));
    }

    public async Task<IReadOnlyList<DriveState>> ReadDrivesAsync(CancellationToken cancellationToken)
    {
        var drive = RequireOnline(await _kvmd.GetMsdAsync(cancellationToken));
        var drives = new List<DriveState> { ToDriveState(drive) };
        var extras = await ReadExtraDrivesAsync(cancellationToken);
        for (var i = 0; i < extras.Count; i++)
            drives.Add(extras[i] with { Index = i + 1 });
        return drives;
    }

    public async Task AttachAsync(int drive, string imagePath, bool cdrom, bool readOnly, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(imagePath);
        if (drive != 0)
        {
            var (extra, original) = await ResolveExtraDriveAsync(drive, cancellationToken);
            await extra.AttachAsync(original, imagePath, cdrom, readOnly, cancellationToken);
            return;
        }
        var name = ImageName(imagePath);
        await _mainDrive.WaitAsync(cancellationToken);
        try
        {
            var current = RequireOnline(await _kvmd.GetMsdAsync(cancellationToken), out var busy);
            if (Presents(current, name, cdrom, readOnly))
                return;
            // An upload or download holds kvmd's lock for minutes: leave the current medium alone rather
            // than eject it and then fail on the next step.
            if (busy)
                throw new GadgetBusyException($"kvmd is busy with another MSD operation (an upload or download?); drive 0 still presents {current}.");
            if (current.Connected)
            {
                Log.Disconnecting(_logger, current.ToString());
                await _kvmd.PostAsync("msd/set_connected?connected=0", cancellationToken);
            }
            await SelectAsync(name, cdrom, readOnly, cancellationToken);

            // kvmd silently turns rw off (cdrom, *.iso, an image its user cannot write): check the selection
            // before the host sees it, not after.
            var selected = RequireOnline(await _kvmd.GetMsdAsync(cancellationToken));
            if (selected.ImageName != name || !selected.InStorage || selected.Cdrom != cdrom || selected.Connected)
                throw new GadgetException($"kvmd was asked to select '{name}' ({Mode(cdrom, readOnly)}) but has {selected} instead (changed by someone else?).");
            if (!readOnly && !selected.Rw)
                throw new GadgetException($"kvmd selected '{name}' read-only although drive 0 was asked to be writable: kvmd never writes *.iso images, CD-ROM drives, or images its user cannot write. Nothing was connected.");

            await _kvmd.PostAsync("msd/set_connected?connected=1", cancellationToken);
            var presented = RequireOnline(await _kvmd.GetMsdAsync(cancellationToken));
            if (!Presents(presented, name, cdrom, readOnly))
                throw new GadgetException($"kvmd was asked to present '{name}' ({Mode(cdrom, readOnly)}) but presents {presented} instead.");
            Log.Attached(_logger, name, cdrom, readOnly);
        }
        finally
        {
            _mainDrive.Release();
        }
    }

    /// <summary>
    /// Extra drives: a plain eject the kernel refuses while the host holds the medium. Drive 0: kvmd
    /// offers no such thing (its disconnect is always a forced eject), so it is that.
    /// </summary>
    public async Task EjectGentlyAsync(int drive, CancellationToken cancellationToken)
    {
        if (drive != 0)
        {
            var (extra, original) = await ResolveExtraDriveAsync(drive, cancellationToken);
            await extra.EjectGentlyAsync(original, cancellationToken);
            return;
        }
        await EjectAsync(drive, cancellationToken);
    }

    public async Task EjectAsync(int drive, CancellationToken cancellationToken)
    {
        if (drive != 0)
        {
            var (extra, original) = await ResolveExtraDriveAsync(drive, cancellationToken);
            await extra.EjectAsync(original, cancellationToken);
            return;
        }
        await _mainDrive.WaitAsync(cancellationToken);
        try
        {
            var current = RequireOnline(await _kvmd.GetMsdAsync(cancellationToken), out var busy);
            if (!current.Connected)
                return;
            if (busy)
                throw new GadgetBusyException($"kvmd is busy with another MSD operation; drive 0 still presents {current}.");
            try
            {
                // Keeps kvmd's selection (image, cdrom, rw), as kvmd's own Disconnect button does.
                await _kvmd.PostAsync("msd/set_connected?connected=0", cancellationToken);
            }
            catch (KvmdApiException ex) when (ex.KvmdError == "MsdDisconnectedError")
            {
                // Someone disconnected it between our read and our request: the outcome asked for.
            }
            var after = RequireOnline(await _kvmd.GetMsdAsync(cancellationToken));
            if (after.Connected)
                throw new GadgetException($"kvmd was asked to disconnect drive 0 but still presents {after}.");
            Log.Ejected(_logger, current.ImageName ?? "(none)");
        }
        finally
        {
            _mainDrive.Release();
        }
    }

    /// <summary>kvmd-otg builds and binds the gadget at boot; the agent must never build a second one.</summary>
    public Task<bool> EnsureGadgetAsync(CancellationToken cancellationToken) => Task.FromResult(false);

    public Task<string?> ReadHostStateAsync(CancellationToken cancellationToken) =>
        _extraDrives?.ReadHostStateAsync(cancellationToken) ?? Task.FromResult<string?>(null);

    public void Dispose()
    {
        _kvmd.Dispose();
        _mainDrive.Dispose();
    }

    private async Task SelectAsync(string name, bool cdrom, bool readOnly, CancellationToken cancellationToken)
    {
        var query = $"msd/set_params?image={Uri.EscapeDataString(name)}&cdrom={(cdrom ? 1 : 0)}&rw={(readOnly ? 0 : 1)}";
        var delay = _options.UnknownImageRetryDelay;
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await _kvmd.PostAsync(query, cancellationToken);
                return;
            }
            catch (KvmdApiException ex) when (ex.KvmdError == "MsdUnknownImageError")
            {
                // kvmd rescans its storage on inotify events; a file renamed in a moment ago may not be listed yet.
                if (attempt > _options.UnknownImageRetries)
                    throw new KvmdApiException(
                        $"kvmd does not know image '{name}' ({ex.KvmdError}: {ex.KvmdMessage}) after {attempt} tries: is the file inside kvmd's storage {_storageRoot} as kvmd sees it (the same mount), complete, and not a symlink?",
                        ex.KvmdError, ex.KvmdMessage);
                Log.ImageNotKnownYet(_logger, name, attempt, delay);
                await Task.Delay(delay, _time, cancellationToken);
                delay *= 2;
            }
        }
    }

    /// <summary>The kvmd image name of <paramref name="imagePath"/>: its path relative to kvmd's storage, with '/'.</summary>
    private string ImageName(string imagePath)
    {
        if (!Path.IsPathFullyQualified(imagePath))
            throw new GadgetException($"'{imagePath}' is not an absolute path; kvmd presents images from its storage {_storageRoot}.");
        var full = Path.GetFullPath(imagePath);
        var relative = Path.GetRelativePath(_storageRoot, full);
        if (relative == "." || relative == ".." || relative.StartsWith("../", StringComparison.Ordinal) || Path.IsPathRooted(relative))
            throw new GadgetException(
                $"{full} is outside kvmd's storage {_storageRoot}: kvmd only presents images under its storage. Mount or bind-mount the agent's store inside it " +
                $"(e.g. at {_storageRoot}/msdfleet, with Agent:StorageRoot pointing there), or set Gadget:Kvmd:StorageRoot to where kvmd's storage is.");
        var parts = relative.Split('/');
        var walked = _storageRoot;
        foreach (var part in parts)
        {
            // What kvmd's scan (fs._list_dir) skips and its name validator (valid_printable_filename) would rewrite.
            if (part.StartsWith('.') || part == "lost+found" || part.Length > 255 || part.Trim() != part || part.Any(char.IsControl))
                throw new GadgetException($"kvmd cannot present {full}: '{part}' is a name kvmd never lists (it skips names starting with '.', lost+found, and rewrites names with control characters, outer spaces or over 255 characters).");
            walked = Path.Join(walked, part);
            if (new FileInfo(walked).LinkTarget is not null)
                throw new GadgetException($"kvmd cannot present {full}: {walked} is a symbolic link, and kvmd's storage scan does not follow links. Use a bind mount instead.");
        }
        return string.Join('/', parts);
    }

    private static bool Presents(KvmdDrive drive, string name, bool cdrom, bool readOnly) =>
        drive.Connected && drive.InStorage && drive.ImageName == name && drive.Cdrom == cdrom && drive.Rw == !readOnly;

    private static string Mode(bool cdrom, bool readOnly) => $"{(cdrom ? "cdrom" : "flash")}, {(readOnly ? "read-only" : "rw")}";

    private DriveState ToDriveState(KvmdDrive drive)
    {
        // kvmd names an image in its storage relative to the storage root; a file attached by hand from
        // elsewhere only by its base name, which is kept as is: it can never match an image of ours.
        string? file = drive is { Connected: true, ImageName: { } name }
            ? (drive.InStorage ? Path.Join(_storageRoot, name) : name)
            : null;
        return new DriveState(0, _options.FunctionName, 0, file, drive.Cdrom, !drive.Rw);
    }

    private KvmdDrive RequireOnline(KvmdMsdState state) => RequireOnline(state, out _);

    private KvmdDrive RequireOnline(KvmdMsdState state, out bool busy)
    {
        busy = state.Busy;
        if (!state.Enabled)
            throw new GadgetUnavailableException($"kvmd on {_kvmd.Endpoint} reports its MSD disabled (kvmd.msd.type is not otg): enable it in /etc/kvmd/override.yaml, or use Gadget:Driver=configfs.");
        if (state.Drive is null)
            throw new GadgetUnavailableException($"kvmd on {_kvmd.Endpoint} reports its MSD offline: it has no drive state (its storage is not mounted or {_options.FunctionName} is missing); see journalctl -u kvmd.");
        if (!state.Online)
            throw new GadgetUnavailableException($"kvmd on {_kvmd.Endpoint} reports its MSD offline: {_options.FunctionName} is not enabled in the gadget's configuration (kvmd-otgconf -l lists it, -e enables it).");
        return state.Drive;
    }

    private async Task<IReadOnlyList<DriveState>> ReadExtraDrivesAsync(CancellationToken cancellationToken)
    {
        if (_extraDrives is null)
            return [];
        var all = await _extraDrives.ReadDrivesAsync(cancellationToken);
        return [.. all.Where(d => !string.Equals(d.Function, _options.FunctionName, StringComparison.Ordinal))];
    }

    private async Task<(IGadgetDriver Driver, int Index)> ResolveExtraDriveAsync(int drive, CancellationToken cancellationToken)
    {
        var extras = await ReadExtraDrivesAsync(cancellationToken);
        if (drive < 1 || drive > extras.Count)
            throw new GadgetNotFoundException(_extraDrives is null
                ? $"Drive {drive} does not exist: through kvmd this agent presents drive 0 only (no extra-drive driver is configured)."
                : $"Drive {drive} does not exist: kvmd presents drive 0 and the gadget has {extras.Count} extra drive(s) (kvmd's otg.devices.drives.count).");
        return (_extraDrives!, extras[drive - 1].Index);
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "kvmd drive 0 presents {Image} (cdrom {Cdrom}, read-only {ReadOnly})")]
        public static partial void Attached(ILogger logger, string image, bool cdrom, bool readOnly);

        [LoggerMessage(2, LogLevel.Information, "kvmd drive 0 disconnected {Image}")]
        public static partial void Ejected(ILogger logger, string image);

        [LoggerMessage(3, LogLevel.Information, "Disconnecting kvmd drive 0 from {Current} to present another image")]
        public static partial void Disconnecting(ILogger logger, string current);

        [LoggerMessage(4, LogLevel.Debug, "kvmd does not know image {Image} yet (try {Attempt}); retrying in {Delay}")]
        public static partial void ImageNotKnownYet(ILogger logger, string image, int attempt, TimeSpan delay);
    }
}
