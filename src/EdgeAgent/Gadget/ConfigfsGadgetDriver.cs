using System.Globalization;
using System.Text.RegularExpressions;

namespace MsdFleet.EdgeAgent.Gadget;

/// <summary>
/// Drives a Linux USB gadget's <c>mass_storage</c> functions through configfs, attaching to a gadget that
/// already exists (e.g. the one kvmd-otg builds, with its extra drives) or building its own. Drives are
/// discovered on every read: each <c>mass_storage.*</c> function in natural order (<c>usb0</c>, <c>usb1</c>,
/// … <c>usb10</c>), each of its <c>lun.N</c> folders in number order, numbered 0, 1, … across functions.
/// Order matters to the kernel: <c>ro</c> and <c>cdrom</c> cannot change while a file is attached, so they
/// are written first and <c>file</c> last; detaching uses <c>forced_eject</c>, which works even while the
/// host has locked the medium. Synchronous file I/O on configfs attributes, wrapped as completed tasks.
/// </summary>
public sealed partial class ConfigfsGadgetDriver(GadgetOptions options) : IGadgetDriver
{
    private const int Ebusy = 16;

    private string GadgetPath => Path.Combine(options.ConfigfsRoot, "usb_gadget", options.GadgetName);

    /// <summary>The drives as they are now (no medium → <see cref="DriveState.File"/> null).</summary>
    public IReadOnlyList<DriveState> ReadDrives()
    {
        var functions = Path.Combine(GadgetPath, "functions");
        if (!Directory.Exists(functions))
            return [];
        var drives = new List<DriveState>();
        foreach (var function in Directory.EnumerateDirectories(functions, "mass_storage.*")
                     .Select(Path.GetFileName).OfType<string>()
                     .Where(f => !options.IgnoreFunctions.Contains(f, StringComparer.Ordinal))
                     .OrderBy(NaturalKey, StringComparer.Ordinal))
        {
            foreach (var lun in LunNumbers(Path.Combine(functions, function)))
            {
                if (drives.Count == Protocol.Messages.DriveLimits.MaxDrives)
                    return drives;
                var dir = Path.Combine(functions, function, $"lun.{lun}");
                var file = ReadAttribute(dir, "file");
                drives.Add(new DriveState(drives.Count, function, lun, string.IsNullOrEmpty(file) ? null : file,
                    ReadAttribute(dir, "cdrom") == "1", ReadAttribute(dir, "ro") == "1"));
            }
        }
        return drives;
    }

    public Task<IReadOnlyList<DriveState>> ReadDrivesAsync(CancellationToken cancellationToken) => Task.FromResult(ReadDrives());

    public Task AttachAsync(int drive, string imagePath, bool cdrom, bool readOnly, CancellationToken cancellationToken)
    {
        Attach(drive, imagePath, cdrom, readOnly);
        return Task.CompletedTask;
    }

    public Task EjectAsync(int drive, CancellationToken cancellationToken)
    {
        Eject(drive);
        return Task.CompletedTask;
    }

    public Task EjectGentlyAsync(int drive, CancellationToken cancellationToken)
    {
        EjectGently(drive);
        return Task.CompletedTask;
    }

    public Task<bool> EnsureGadgetAsync(CancellationToken cancellationToken) => Task.FromResult(EnsureGadget());

    public Task<string?> ReadHostStateAsync(CancellationToken cancellationToken) => Task.FromResult(ReadHostState());

    public void Attach(int drive, string imagePath, bool cdrom, bool readOnly)
    {
        var (dir, current) = RequireDrive(drive);
        if (current.File == imagePath && current.Cdrom == cdrom && current.ReadOnly == readOnly)
            return;
        if (current.HasMedium)
            Eject(drive);
        WriteAttribute(dir, "ro", readOnly ? "1" : "0");
        WriteAttribute(dir, "cdrom", cdrom ? "1" : "0");
        if (File.Exists(Path.Combine(dir, "removable")))
            WriteAttribute(dir, "removable", "1");
        WriteAttribute(dir, "file", imagePath);
    }

    /// <summary>A plain eject (<c>file</c> emptied): the kernel refuses it with EBUSY while the host prevents medium removal.</summary>
    public void EjectGently(int drive)
    {
        var (dir, state) = RequireDrive(drive);
        if (state.HasMedium)
            WriteAttribute(dir, "file", string.Empty);
    }

    public void Eject(int drive)
    {
        var (dir, _) = RequireDrive(drive);
        if (File.Exists(Path.Combine(dir, "forced_eject")))
            WriteAttribute(dir, "forced_eject", "1");
        // Kernels without forced_eject (and directory-tree fakes) need the plain eject. After a forced
        // eject the kernel has already emptied `file`, so on a real kernel this is a no-op.
        if (!string.IsNullOrEmpty(ReadAttribute(dir, "file")))
            WriteAttribute(dir, "file", string.Empty);
    }

    public string? ReadHostState()
    {
        var gadget = Path.Combine(options.ConfigfsRoot, "usb_gadget", options.GadgetName);
        var udc = File.Exists(Path.Combine(gadget, "UDC")) ? ReadAttribute(gadget, "UDC") : null;
        if (string.IsNullOrEmpty(udc))
            return "not bound";
        var state = Path.Combine(options.UdcClassRoot, udc, "state");
        return File.Exists(state) ? File.ReadAllText(state).Trim() : null;
    }

    public bool EnsureGadget()
    {
        var gadget = Path.Combine(options.ConfigfsRoot, "usb_gadget", options.GadgetName);
        if (File.Exists(Path.Combine(gadget, "UDC")) && !string.IsNullOrEmpty(ReadAttribute(gadget, "UDC")))
            return false;
        if (!Directory.Exists(Path.Combine(options.ConfigfsRoot, "usb_gadget")))
            throw new GadgetNotFoundException($"{options.ConfigfsRoot}/usb_gadget does not exist: is configfs mounted and libcomposite loaded (modprobe libcomposite)?");
        try
        {
            // configfs creates each folder's attributes itself when the folder is made.
            Directory.CreateDirectory(gadget);
            WriteAttribute(gadget, "idVendor", options.VendorId);
            WriteAttribute(gadget, "idProduct", options.ProductId);
            WriteAttribute(gadget, "bcdDevice", "0x0100");
            WriteAttribute(gadget, "bcdUSB", "0x0200");
            var strings = Directory.CreateDirectory(Path.Combine(gadget, "strings", "0x409")).FullName;
            WriteAttribute(strings, "manufacturer", options.Manufacturer);
            WriteAttribute(strings, "product", options.Product);
            WriteAttribute(strings, "serialnumber", SerialNumber());
            var config = Directory.CreateDirectory(Path.Combine(gadget, "configs", "c.1")).FullName;
            WriteAttribute(Directory.CreateDirectory(Path.Combine(config, "strings", "0x409")).FullName, "configuration", "Mass storage");
            if (File.Exists(Path.Combine(config, "MaxPower")))
                WriteAttribute(config, "MaxPower", "250");
            // Drive i is LUN (i % Luns) of function (i / Luns): the order discovery reads them back in.
            for (var f = 0; f < options.Functions; f++)
            {
                var function = Directory.CreateDirectory(Path.Combine(gadget, "functions", FunctionName(f))).FullName;
                for (var lun = 0; lun < options.Luns; lun++)
                {
                    var dir = Directory.CreateDirectory(Path.Combine(function, $"lun.{lun}")).FullName;
                    var cdrom = options.CdromLuns.Contains(f * options.Luns + lun);
                    WriteAttribute(dir, "ro", cdrom ? "1" : "0");
                    WriteAttribute(dir, "cdrom", cdrom ? "1" : "0");
                    if (File.Exists(Path.Combine(dir, "removable")))
                        WriteAttribute(dir, "removable", "1");
                }
                var link = Path.Combine(config, Path.GetFileName(function));
                if (!Directory.Exists(link))
                    Directory.CreateSymbolicLink(link, function);
            }
            var udc = string.IsNullOrEmpty(options.Udc)
                ? (Directory.Exists(options.UdcClassRoot) ? Directory.EnumerateFileSystemEntries(options.UdcClassRoot).Select(Path.GetFileName).Order(StringComparer.Ordinal).FirstOrDefault() : null)
                : options.Udc;
            if (string.IsNullOrEmpty(udc))
                throw new GadgetNotFoundException($"No USB device controller in {options.UdcClassRoot}: is the OTG port in peripheral mode (dtoverlay=dwc2)?");
            WriteAttribute(gadget, "UDC", udc);
            return true;
        }
        catch (UnauthorizedAccessException ex)
        {
            throw new GadgetPermissionException($"Building the gadget under {gadget} was refused: the agent needs root for configfs.", ex);
        }
    }

    private static string SerialNumber()
    {
        const string machineId = "/etc/machine-id";
        var id = File.Exists(machineId) ? File.ReadAllText(machineId).Trim() : string.Empty;
        return id.Length >= 12 ? id[..12] : "msdfleet0001";
    }

    /// <summary>The name of the <paramref name="n"/>th function of a built gadget: FunctionName counted on (usb0 → usb1 …).</summary>
    private string FunctionName(int n)
    {
        var match = TrailingNumber().Match(options.FunctionName);
        return options.FunctionName[..match.Index] + (int.Parse(match.Value, CultureInfo.InvariantCulture) + n).ToString(CultureInfo.InvariantCulture);
    }

    private static IEnumerable<int> LunNumbers(string function) =>
        Directory.EnumerateDirectories(function, "lun.*")
            .Select(d => Path.GetFileName(d)[4..])
            .Select(n => int.TryParse(n, NumberStyles.None, CultureInfo.InvariantCulture, out var lun) ? lun : -1)
            .Where(lun => lun >= 0)
            .Order();

    /// <summary>Sorts <c>usb2</c> before <c>usb10</c>: digit runs padded to a fixed width.</summary>
    private static string NaturalKey(string name) => Digits().Replace(name, m => m.Value.PadLeft(10, '0'));

    private (string Dir, DriveState State) RequireDrive(int drive)
    {
        var state = ReadDrives().FirstOrDefault(d => d.Index == drive)
            ?? throw new GadgetNotFoundException($"The gadget under {GadgetPath} has no drive {drive}: is it built, and are Gadget:GadgetName and its mass_storage functions right?");
        return (Path.Combine(GadgetPath, "functions", state.Function, $"lun.{state.Lun}"), state);
    }

    [GeneratedRegex("[0-9]+$")]
    private static partial Regex TrailingNumber();

    [GeneratedRegex("[0-9]+")]
    private static partial Regex Digits();

    private static string ReadAttribute(string dir, string name)
    {
        var path = Path.Combine(dir, name);
        return File.Exists(path) ? File.ReadAllText(path).TrimEnd('\n', '\0') : string.Empty;
    }

    private static void WriteAttribute(string dir, string name, string value)
    {
        var path = Path.Combine(dir, name);
        try
        {
            // One write(2) of the whole value, as configfs expects; truncating open like `echo > file`.
            using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.ReadWrite, 1);
            var bytes = System.Text.Encoding.UTF8.GetBytes(value + "\n");
            stream.Write(bytes);
        }
        catch (IOException ex) when ((ex.HResult & 0xFFFF) == Ebusy || ex.Message.Contains("busy", StringComparison.OrdinalIgnoreCase))
        {
            throw new GadgetBusyException($"Writing '{name}' of {dir} failed: the device is busy (the host may hold the medium, or a file is attached).", ex);
        }
        catch (UnauthorizedAccessException ex)
        {
            throw new GadgetPermissionException($"Writing '{name}' of {dir} was refused: the agent lacks permission on the gadget's attributes.", ex);
        }
        catch (IOException ex)
        {
            throw new GadgetException($"Writing '{name}' of {dir} failed: {ex.Message}", ex);
        }
    }
}
