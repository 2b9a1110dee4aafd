namespace MsdFleet.EdgeAgent.Gadget;

/// <summary>
/// Drives a Linux USB gadget <c>mass_storage</c> function through configfs, attaching to a gadget that
/// already exists (e.g. the one kvmd-otg builds). Order matters to the kernel: <c>ro</c> and <c>cdrom</c>
/// cannot change while a file is attached, so they are written first and <c>file</c> last; detaching
/// uses <c>forced_eject</c>, which works even while the host has locked the medium.
/// </summary>
public sealed class ConfigfsGadgetDriver(GadgetOptions options) : IGadgetDriver
{
    private const int Ebusy = 16;

    public string FunctionPath => Path.Combine(options.ConfigfsRoot, "usb_gadget", options.GadgetName, "functions", options.FunctionName);

    public LunState? ReadLun(int lun)
    {
        var dir = LunPath(lun);
        if (!Directory.Exists(dir))
            return null;
        var file = ReadAttribute(dir, "file");
        return new LunState(lun, string.IsNullOrEmpty(file) ? null : file, ReadAttribute(dir, "cdrom") == "1", ReadAttribute(dir, "ro") == "1");
    }

    public void Attach(int lun, string imagePath, bool cdrom, bool readOnly)
    {
        var dir = RequireLun(lun);
        var current = ReadLun(lun)!;
        if (current.File == imagePath && current.Cdrom == cdrom && current.ReadOnly == readOnly)
            return;
        if (current.HasMedium)
            Eject(lun);
        WriteAttribute(dir, "ro", readOnly ? "1" : "0");
        WriteAttribute(dir, "cdrom", cdrom ? "1" : "0");
        if (File.Exists(Path.Combine(dir, "removable")))
            WriteAttribute(dir, "removable", "1");
        WriteAttribute(dir, "file", imagePath);
    }

    public void Eject(int lun)
    {
        var dir = RequireLun(lun);
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
            var function = Directory.CreateDirectory(FunctionPath).FullName;
            for (var lun = 0; lun < options.Luns; lun++)
            {
                var dir = Directory.CreateDirectory(LunPath(lun)).FullName;
                var cdrom = options.CdromLuns.Contains(lun);
                WriteAttribute(dir, "ro", cdrom ? "1" : "0");
                WriteAttribute(dir, "cdrom", cdrom ? "1" : "0");
                if (File.Exists(Path.Combine(dir, "removable")))
                    WriteAttribute(dir, "removable", "1");
            }
            var link = Path.Combine(config, Path.GetFileName(function));
            if (!Directory.Exists(link))
                Directory.CreateSymbolicLink(link, function);
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

    private string LunPath(int lun) => Path.Combine(FunctionPath, $"lun.{lun}");

    private string RequireLun(int lun)
    {
        var dir = LunPath(lun);
        if (!Directory.Exists(dir))
            throw new GadgetNotFoundException($"LUN folder {dir} does not exist: is the gadget built and Gadget:GadgetName/FunctionName right?");
        return dir;
    }

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
