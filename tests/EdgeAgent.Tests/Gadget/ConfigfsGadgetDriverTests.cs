using MsdFleet.EdgeAgent.Gadget;

namespace MsdFleet.EdgeAgent.Tests.Gadget;

/// <summary>The real driver against a directory tree laid out like configfs.</summary>
public class ConfigfsGadgetDriverTests : IDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly GadgetOptions _options;
    private readonly ConfigfsGadgetDriver _driver;
    private readonly string _lun0;
    private readonly List<string> _writes = [];

    public ConfigfsGadgetDriverTests()
    {
        _options = new GadgetOptions
        {
            ConfigfsRoot = Path.Combine(_dir.Path, "configfs"),
            GadgetName = "kvmd",
            FunctionName = "mass_storage.usb0",
            UdcClassRoot = Path.Combine(_dir.Path, "udc"),
        };
        _lun0 = Path.Combine(_options.ConfigfsRoot, "usb_gadget", "kvmd", "functions", "mass_storage.usb0", "lun.0");
        Directory.CreateDirectory(_lun0);
        foreach (var attr in new[] { "file", "cdrom", "ro", "removable", "forced_eject" })
            File.WriteAllText(Path.Combine(_lun0, attr), attr is "ro" ? "1\n" : "\n");
        _driver = new ConfigfsGadgetDriver(_options);
    }

    public void Dispose() => _dir.Dispose();

    private string Read(string attr) => File.ReadAllText(Path.Combine(_lun0, attr)).Trim();

    [Fact]
    public void Attach_WritesRoThenCdromThenFile()
    {
        var image = Path.Combine(_dir.Path, "image.iso");
        File.WriteAllText(image, "x");
        var before = File.GetLastWriteTimeUtc(Path.Combine(_lun0, "ro"));
        _driver.Attach(0, image, cdrom: true, readOnly: true);
        Assert.Equal(image, Read("file"));
        Assert.Equal("1", Read("cdrom"));
        Assert.Equal("1", Read("ro"));
        // `file` is written last: its mtime is not older than ro's or cdrom's.
        Assert.True(File.GetLastWriteTimeUtc(Path.Combine(_lun0, "file")) >= File.GetLastWriteTimeUtc(Path.Combine(_lun0, "cdrom")));
        Assert.True(File.GetLastWriteTimeUtc(Path.Combine(_lun0, "cdrom")) >= File.GetLastWriteTimeUtc(Path.Combine(_lun0, "ro")));
        Assert.True(File.GetLastWriteTimeUtc(Path.Combine(_lun0, "ro")) >= before);
    }

    [Fact]
    public void ReadLun_ReflectsAttributes()
    {
        _driver.Attach(0, "/images/a.img", cdrom: false, readOnly: false);
        Assert.Equal([new DriveState(0, "mass_storage.usb0", 0, "/images/a.img", false, false)], _driver.ReadDrives());
    }

    [Fact]
    public void Eject_WritesForcedEjectAndLeavesNoFile()
    {
        _driver.Attach(0, "/images/a.img", cdrom: true, readOnly: true);
        _driver.Eject(0);
        Assert.Equal("1", Read("forced_eject"));
        Assert.False(_driver.ReadDrives()[0].HasMedium);
    }

    [Fact]
    public void Attach_DifferentFileWhileAttached_EjectsFirst()
    {
        _driver.Attach(0, "/images/a.img", cdrom: true, readOnly: true);
        _driver.Attach(0, "/images/b.img", cdrom: false, readOnly: false);
        Assert.Equal("1", Read("forced_eject"));
        Assert.Equal(new DriveState(0, "mass_storage.usb0", 0, "/images/b.img", false, false), _driver.ReadDrives()[0]);
    }

    [Fact]
    public void Attach_MissingLun_TypedError()
    {
        var ex = Assert.Throws<GadgetNotFoundException>(() => _driver.Attach(5, "/x", false, false));
        Assert.Contains("no drive 5", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Attach_ReadOnlyAttribute_PermissionError()
    {
        if (Environment.UserName == "root")
        {
            // root ignores file modes; make the attribute a folder so the open fails the same way.
            File.Delete(Path.Combine(_lun0, "file"));
            Directory.CreateDirectory(Path.Combine(_lun0, "file"));
            Assert.ThrowsAny<GadgetException>(() => _driver.Attach(0, "/x", false, false));
            return;
        }
        File.SetUnixFileMode(Path.Combine(_lun0, "file"), UnixFileMode.UserRead);
        Assert.Throws<GadgetPermissionException>(() => _driver.Attach(0, "/x", false, false));
    }

    [Fact]
    public void ReadHostState_ReadsUdcState()
    {
        Assert.Equal("not bound", _driver.ReadHostState());
        File.WriteAllText(Path.Combine(_options.ConfigfsRoot, "usb_gadget", "kvmd", "UDC"), "dummy_udc.0\n");
        Directory.CreateDirectory(Path.Combine(_options.UdcClassRoot, "dummy_udc.0"));
        File.WriteAllText(Path.Combine(_options.UdcClassRoot, "dummy_udc.0", "state"), "configured\n");
        Assert.Equal("configured", _driver.ReadHostState());
    }

    [Fact]
    public void DriveCommand_StatusAttachEject_UseTheDriver()
    {
        var image = Path.Combine(_dir.Path, "disk.img");
        File.WriteAllBytes(image, new byte[512]);
        var output = new StringWriter();
        var error = new StringWriter();
        Assert.Equal(0, DriveCommand.Run(["attach", image, "--cdrom"], _options, output, error));
        Assert.Equal(image, Read("file"));
        Assert.Equal("1", Read("ro")); // a CD-ROM is always read-only
        Assert.Equal(0, DriveCommand.Run(["status"], _options, output, error));
        Assert.Contains($"file={image} cdrom=1 ro=1", output.ToString(), StringComparison.Ordinal);
        Assert.Equal(0, DriveCommand.Run(["eject"], _options, output, error));
        Assert.Equal(string.Empty, Read("file"));
        Assert.Equal(2, DriveCommand.Run(["attach", "/does/not/exist"], _options, output, error));
        Assert.Equal(2, DriveCommand.Run(["frobnicate"], _options, output, error));
        Assert.Equal(1, DriveCommand.Run(["status", "--lun", "3"], _options, output, error));
    }
}

public class ConfigfsGadgetSetupTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void EnsureGadget_BuildsLayoutLinksFunctionAndBindsFirstUdc()
    {
        var options = new GadgetOptions
        {
            ConfigfsRoot = Path.Combine(_dir.Path, "configfs"),
            UdcClassRoot = Path.Combine(_dir.Path, "udc"),
            GadgetName = "msdfleet",
            FunctionName = "mass_storage.0",
            Luns = 2,
            CdromLuns = [1],
        };
        Directory.CreateDirectory(Path.Combine(options.ConfigfsRoot, "usb_gadget"));
        Directory.CreateDirectory(Path.Combine(options.UdcClassRoot, "fe980000.usb"));
        var driver = new ConfigfsGadgetDriver(options);
        Assert.True(driver.EnsureGadget());
        var gadget = Path.Combine(options.ConfigfsRoot, "usb_gadget", "msdfleet");
        Assert.Equal("fe980000.usb", File.ReadAllText(Path.Combine(gadget, "UDC")).Trim());
        Assert.Equal("0x1d6b", File.ReadAllText(Path.Combine(gadget, "idVendor")).Trim());
        Assert.True(Directory.Exists(Path.Combine(gadget, "configs", "c.1", "mass_storage.0")));
        Assert.Equal([new DriveState(0, "mass_storage.0", 0, null, false, false), new DriveState(1, "mass_storage.0", 1, null, true, true)], driver.ReadDrives());
        Assert.False(driver.EnsureGadget()); // already bound: left alone
    }

    [Fact]
    public void EnsureGadget_NoConfigfsOrNoUdc_TypedErrors()
    {
        var options = new GadgetOptions { ConfigfsRoot = Path.Combine(_dir.Path, "none"), UdcClassRoot = Path.Combine(_dir.Path, "udc") };
        Assert.Contains("libcomposite", Assert.Throws<GadgetNotFoundException>(() => new ConfigfsGadgetDriver(options).EnsureGadget()).Message, StringComparison.Ordinal);
        Directory.CreateDirectory(Path.Combine(options.ConfigfsRoot, "usb_gadget"));
        Assert.Contains("dwc2", Assert.Throws<GadgetNotFoundException>(() => new ConfigfsGadgetDriver(options).EnsureGadget()).Message, StringComparison.Ordinal);
    }
}

public class ConfigfsGadgetDiscoveryTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private static void MakeLun(string function, int lun)
    {
        var dir = Path.Combine(function, $"lun.{lun}");
        Directory.CreateDirectory(dir);
        foreach (var attr in new[] { "file", "cdrom", "ro", "forced_eject" })
            File.WriteAllText(Path.Combine(dir, attr), "\n");
    }

    [Fact]
    public void ReadDrives_KvmdExtraDrives_NumberedAcrossFunctionsInNaturalOrder()
    {
        var options = new GadgetOptions { ConfigfsRoot = Path.Combine(_dir.Path, "configfs"), UdcClassRoot = Path.Combine(_dir.Path, "udc") };
        var functions = Path.Combine(options.ConfigfsRoot, "usb_gadget", "kvmd", "functions");
        MakeLun(Path.Combine(functions, "mass_storage.usb0"), 0);
        MakeLun(Path.Combine(functions, "mass_storage.usb10"), 0);
        MakeLun(Path.Combine(functions, "mass_storage.usb2"), 0);
        MakeLun(Path.Combine(functions, "mass_storage.usb2"), 1);
        Directory.CreateDirectory(Path.Combine(functions, "hid.usb0")); // not a drive
        var driver = new ConfigfsGadgetDriver(options);

        var drives = driver.ReadDrives();
        Assert.Equal([("mass_storage.usb0", 0), ("mass_storage.usb2", 0), ("mass_storage.usb2", 1), ("mass_storage.usb10", 0)],
            drives.Select(d => (d.Function, d.Lun)));
        Assert.Equal([0, 1, 2, 3], drives.Select(d => d.Index));

        driver.Attach(3, "/images/x.img", cdrom: true, readOnly: true);
        Assert.Equal("/images/x.img", File.ReadAllText(Path.Combine(functions, "mass_storage.usb10", "lun.0", "file")).Trim());
        driver.Eject(3);
        Assert.Equal(string.Empty, File.ReadAllText(Path.Combine(functions, "mass_storage.usb10", "lun.0", "file")).Trim());
        Assert.All(drives.Take(3), d => Assert.Null(driver.ReadDrives()[d.Index].File));

        var ignoring = new ConfigfsGadgetDriver(new GadgetOptions
        {
            ConfigfsRoot = options.ConfigfsRoot, UdcClassRoot = options.UdcClassRoot, IgnoreFunctions = ["mass_storage.usb0"],
        });
        Assert.Equal("mass_storage.usb2", ignoring.ReadDrives()[0].Function);
    }

    [Fact]
    public void EnsureGadget_TwoFunctions_BuildsAndLinksEach_CdromByDriveIndex()
    {
        var options = new GadgetOptions
        {
            ConfigfsRoot = Path.Combine(_dir.Path, "configfs"),
            UdcClassRoot = Path.Combine(_dir.Path, "udc"),
            GadgetName = "msdfleet",
            FunctionName = "mass_storage.0",
            Functions = 2,
            CdromLuns = [1],
        };
        Directory.CreateDirectory(Path.Combine(options.ConfigfsRoot, "usb_gadget"));
        Directory.CreateDirectory(Path.Combine(options.UdcClassRoot, "dummy_udc.0"));
        var driver = new ConfigfsGadgetDriver(options);
        Assert.True(driver.EnsureGadget());
        var config = Path.Combine(options.ConfigfsRoot, "usb_gadget", "msdfleet", "configs", "c.1");
        Assert.True(Directory.Exists(Path.Combine(config, "mass_storage.0")));
        Assert.True(Directory.Exists(Path.Combine(config, "mass_storage.1")));
        Assert.Equal([new DriveState(0, "mass_storage.0", 0, null, false, false), new DriveState(1, "mass_storage.1", 0, null, true, true)], driver.ReadDrives());
    }

    [Fact]
    public void Options_TooManyDrives_NamesTheSettings()
    {
        var options = new GadgetOptions { Functions = 4, Luns = 3, CdromLuns = [12] };
        var errors = options.Validate(new System.ComponentModel.DataAnnotations.ValidationContext(options)).Select(e => e.ErrorMessage).ToList();
        Assert.Contains(errors, e => e!.Contains("Gadget:Functions × Gadget:Luns is 12", StringComparison.Ordinal));
        Assert.Contains(errors, e => e!.Contains("Gadget:CdromLuns names drive 12", StringComparison.Ordinal));
    }
}
