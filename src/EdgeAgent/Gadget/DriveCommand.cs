namespace MsdFleet.EdgeAgent.Gadget;

/// <summary>
/// <c>msdfleet-agent drive status|attach FILE [--cdrom] [--ro]|eject</c>: the local admin tool, like
/// kvmd's kvmd-otgmsd, using the very driver the agent uses. Gadget settings come from the agent's
/// configuration and can be overridden with --configfs, --gadget, --function, --udc-root and --lun.
/// </summary>
public static class DriveCommand
{
    private const string Usage = """
        usage: msdfleet-agent drive setup [--luns N] [--cdrom-lun N]...   (build and bind the gadget)
               msdfleet-agent drive status [--lun N]
               msdfleet-agent drive attach FILE [--cdrom] [--ro] [--lun N]
               msdfleet-agent drive eject [--lun N]
        options: --configfs DIR  --gadget NAME  --function NAME  --udc-root DIR
        """;

    public static int Run(IReadOnlyList<string> args, GadgetOptions options, TextWriter output, TextWriter error)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(error);
        var positional = new List<string>();
        bool cdrom = false, readOnly = false;
        var lun = 0;
        for (var i = 0; i < args.Count; i++)
        {
            string Next() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            try
            {
                switch (args[i])
                {
                    case "--cdrom": cdrom = true; break;
                    case "--ro": readOnly = true; break;
                    case "--lun": lun = int.TryParse(Next(), out var n) && n is >= 0 and < 64 ? n : throw new ArgumentException("--lun must be 0..63."); break;
                    case "--luns": options.Luns = int.TryParse(Next(), out var luns) && luns is >= 1 and <= 8 ? luns : throw new ArgumentException("--luns must be 1..8."); break;
                    case "--cdrom-lun": options.CdromLuns = [.. options.CdromLuns, int.TryParse(Next(), out var c) && c is >= 0 and < 8 ? c : throw new ArgumentException("--cdrom-lun must be 0..7.")]; break;
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
                    output.WriteLine(driver.EnsureGadget()
                        ? $"gadget {options.GadgetName} built with {options.Luns} LUN(s) and bound; host side: {driver.ReadHostState() ?? "unknown"}"
                        : $"gadget {options.GadgetName} already exists and is bound");
                    return 0;
                case ["status"]:
                    var state = driver.ReadLun(lun) ?? throw new GadgetNotFoundException($"LUN {lun} does not exist under {driver.FunctionPath}.");
                    output.WriteLine($"lun={lun} file={state.File ?? ""} cdrom={(state.Cdrom ? 1 : 0)} ro={(state.ReadOnly ? 1 : 0)} host={driver.ReadHostState() ?? "unknown"}");
                    return 0;
                case ["attach", var file]:
                    if (!File.Exists(file))
                    {
                        error.WriteLine($"error: {file} does not exist.");
                        return 2;
                    }
                    driver.Attach(lun, Path.GetFullPath(file), cdrom, readOnly || cdrom);
                    output.WriteLine($"attached {Path.GetFullPath(file)} to lun {lun} as {(cdrom ? "cdrom" : "flash")}{(readOnly || cdrom ? ", read-only" : "")}");
                    return 0;
                case ["eject"]:
                    driver.Eject(lun);
                    output.WriteLine($"ejected lun {lun}");
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
