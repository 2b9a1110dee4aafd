using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Gadget;

/// <summary>
/// <c>msdfleet-agent drive status|attach FILE [--cdrom] [--ro]|eject</c>: the local admin tool, like
/// kvmd's kvmd-otgmsd, using the very driver the agent uses. Gadget settings come from the agent's
/// configuration and can be overridden with --configfs, --gadget, --function, --udc-root and --lun.
/// </summary>
public static class DriveCommand
{
    private const string Usage = """
        usage: msdfleet-agent drive setup [--functions N] [--luns N] [--cdrom-lun N]...   (build and bind the gadget)
               msdfleet-agent drive status [--lun N]          (every drive without --lun)
               msdfleet-agent drive attach FILE [--cdrom] [--ro] [--lun N]
               msdfleet-agent drive eject [--lun N] [--gentle]       (--gentle: refused while the host holds the medium)
               msdfleet-agent drive watch [--seconds N]              (what the host reads and writes, per drive)
        --lun N is the drive index: drives are numbered across the gadget's mass_storage functions.
        options: --configfs DIR  --gadget NAME  --function NAME  --udc-root DIR
        """;

    /// <summary>Follows the host's reads for a while and prints one line per drive (what the agent reports as hostRead).</summary>
    private static void Watch(ConfigfsGadgetDriver driver, int seconds, TextWriter output)
    {
        using var monitor = new HostReadMonitor(TimeProvider.System, Microsoft.Extensions.Logging.Abstractions.NullLogger<HostReadMonitor>.Instance);
        monitor.Read(driver.ReadDrives());
        if (!monitor.Available)
            throw new GadgetException("Host reads cannot be observed here: fanotify needs root (CAP_SYS_ADMIN) on a kernel built with it.");
        output.WriteLine($"watching for {seconds} s");
        output.Flush();
        var until = DateTime.UtcNow.AddSeconds(seconds);
        IReadOnlyDictionary<int, Protocol.Messages.HostReadReport> reads;
        do
        {
            Thread.Sleep(500);
            reads = monitor.Read(driver.ReadDrives());
        }
        while (DateTime.UtcNow < until);
        Thread.Sleep(300); // the last batch
        reads = monitor.Read(driver.ReadDrives());
        foreach (var drive in driver.ReadDrives())
        {
            var r = reads.GetValueOrDefault(drive.Index);
            output.WriteLine($"lun={drive.Index} function={drive.Function} host-read-bytes={r?.BytesRead ?? 0} host-written-bytes={r?.BytesWritten ?? 0} " +
                $"read={(r is { LastReadUnixMs: > 0 } ? 1 : 0)} estimated={(r?.BytesEstimated == true ? 1 : 0)}");
        }
    }

    public static int Run(IReadOnlyList<string> args, GadgetOptions options, TextWriter output, TextWriter error)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(error);
        var positional = new List<string>();
        bool cdrom = false, readOnly = false, gentle = false;
        var seconds = 10;
        int? lun = null;
        for (var i = 0; i < args.Count; i++)
        {
            string Next() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            try
            {
                switch (args[i])
                {
                    case "--cdrom": cdrom = true; break;
                    case "--ro": readOnly = true; break;
                    case "--gentle": gentle = true; break;
                    case "--seconds": seconds = int.TryParse(Next(), out var s) && s is >= 1 and <= 86400 ? s : throw new ArgumentException("--seconds must be 1..86400."); break;
                    case "--lun": lun = int.TryParse(Next(), out var n) && n is >= 0 and < DriveLimits.MaxDrives ? n : throw new ArgumentException($"--lun must be 0..{DriveLimits.MaxDrives - 1}."); break;
                    case "--functions": options.Functions = int.TryParse(Next(), out var functions) && functions is >= 1 and <= DriveLimits.MaxDrives ? functions : throw new ArgumentException($"--functions must be 1..{DriveLimits.MaxDrives}."); break;
                    case "--luns": options.Luns = int.TryParse(Next(), out var luns) && luns is >= 1 and <= DriveLimits.MaxDrives ? luns : throw new ArgumentException($"--luns must be 1..{DriveLimits.MaxDrives}."); break;
                    case "--cdrom-lun": options.CdromLuns = [.. options.CdromLuns, int.TryParse(Next(), out var c) && c is >= 0 and < DriveLimits.MaxDrives ? c : throw new ArgumentException($"--cdrom-lun must be 0..{DriveLimits.MaxDrives - 1}.")]; break;
                    case "--configfs": options.ConfigfsRoot = Next(); break;
                    case "--gadget": options.GadgetName = Next(); break;
                    case "--function": options.FunctionName = Next(); break;
                    case "--udc-root": options.UdcClassRoot = Next(); break;
                    case "-h" or "--help": output.WriteLine(Usage); return 0;
                    default:
                        if (args[i].StartsWith("--", StringComparison.Ordinal))
                            throw new ArgumentException($"Unknown option {args[i]}.");
                        positional.Add(args[i]);
                        break;
                }
            }
            catch (ArgumentException ex)
            {
                error.WriteLine($"error: {ex.Message}\n{Usage}");
                return 2;
            }
        }
        var driver = new ConfigfsGadgetDriver(options);
        try
        {
            switch (positional)
            {
                case ["setup"]:
                    if (options.Functions * options.Luns > DriveLimits.MaxDrives)
                        throw new GadgetException($"--functions × --luns is {options.Functions * options.Luns}; at most {DriveLimits.MaxDrives} drives are supported.");
                    output.WriteLine(driver.EnsureGadget()
                        ? $"gadget {options.GadgetName} built with {options.Functions} function(s) × {options.Luns} LUN(s) and bound; host side: {driver.ReadHostState() ?? "unknown"}"
                        : $"gadget {options.GadgetName} already exists and is bound");
                    return 0;
                case ["status"]:
                    var drives = driver.ReadDrives().Where(d => lun is null || d.Index == lun).ToList();
                    if (drives.Count == 0)
                        throw new GadgetNotFoundException(lun is null
                            ? $"The gadget {options.GadgetName} under {options.ConfigfsRoot} has no mass_storage drives."
                            : $"Drive {lun} does not exist in the gadget {options.GadgetName} under {options.ConfigfsRoot}.");
                    foreach (var state in drives)
                        output.WriteLine($"lun={state.Index} function={state.Function} function-lun={state.Lun} file={state.File ?? ""} cdrom={(state.Cdrom ? 1 : 0)} ro={(state.ReadOnly ? 1 : 0)} host={driver.ReadHostState() ?? "unknown"}");
                    return 0;
                case ["attach", var file]:
                    if (!File.Exists(file))
                    {
                        error.WriteLine($"error: {file} does not exist.");
                        return 2;
                    }
                    driver.Attach(lun ?? 0, Path.GetFullPath(file), cdrom, readOnly || cdrom);
                    output.WriteLine($"attached {Path.GetFullPath(file)} to lun {lun ?? 0} as {(cdrom ? "cdrom" : "flash")}{(readOnly || cdrom ? ", read-only" : "")}");
                    return 0;
                case ["eject"]:
                    if (gentle)
                        driver.EjectGently(lun ?? 0);
                    else
                        driver.Eject(lun ?? 0);
                    output.WriteLine($"ejected lun {lun ?? 0}");
                    return 0;
                case ["watch"]:
                    Watch(driver, seconds, output);
                    return 0;
                default:
                    error.WriteLine(Usage);
                    return 2;
            }
        }
        catch (GadgetException ex)
        {
            error.WriteLine($"error: {ex.Message}");
            return 1;
        }
    }
}
