using System.Diagnostics;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using MsdFleet.EdgeAgent.Gadget;
using MsdFleet.EdgeAgent.Gadget.Kvmd;

namespace MsdFleet.EdgeAgent.Tests.Gadget.Kvmd;

/// <summary>The kvmd driver against <see cref="KvmdStandIn"/>, a kvmd MSD API on a real unix socket.</summary>
public sealed class KvmdGadgetDriverTests : IAsyncLifetime
{
    private const string Main = "mass_storage.usb0";
    private readonly CancellationTokenSource _cts = new(TimeSpan.FromSeconds(60));
    private readonly List<KvmdGadgetDriver> _drivers = [];
    private KvmdStandIn _kvmd = null!;

    private CancellationToken Ct => _cts.Token;

    public async Task InitializeAsync() => _kvmd = await KvmdStandIn.StartAsync();

    public async Task DisposeAsync()
    {
        foreach (var driver in _drivers)
            driver.Dispose();
        await _kvmd.DisposeAsync();
        _cts.Dispose();
    }

    private KvmdGadgetDriver Driver(Action<KvmdOptions>? configure = null, IGadgetDriver? extra = null, TimeProvider? time = null, KvmdStandIn? kvmd = null, ILogger<KvmdGadgetDriver>? logger = null)
    {
        kvmd ??= _kvmd;
        var options = new KvmdOptions
        {
            SocketPath = kvmd.SocketPath,
            StorageRoot = kvmd.StorageRoot,
            RequestTimeout = TimeSpan.FromSeconds(10),
            UnknownImageRetryDelay = TimeSpan.FromMilliseconds(1),
        };
        configure?.Invoke(options);
        var driver = new KvmdGadgetDriver(options, extra, time ?? TimeProvider.System, logger ?? NullLogger<KvmdGadgetDriver>.Instance);
        _drivers.Add(driver);
        return driver;
    }

    private IEnumerable<string> Posts(KvmdStandIn? kvmd = null) => (kvmd ?? _kvmd).Requests.Where(r => r.StartsWith("POST ", StringComparison.Ordinal));

    [Fact]
    public async Task AttachAsync_FlashImageInStorage_ConnectsWritableAndReadDrivesReportsAbsolutePath()
    {
        var path = _kvmd.AddImage("msdfleet/images/disk.img");
        var driver = Driver();

        await driver.AttachAsync(0, path, cdrom: false, readOnly: false, Ct);

        Assert.Equal(("msdfleet/images/disk.img", true, false, true), _kvmd.Drive);
        var drive = Assert.Single(await driver.ReadDrivesAsync(Ct));
        Assert.Equal(new DriveState(0, Main, 0, path, Cdrom: false, ReadOnly: false), drive);
    }

    [Fact]
    public async Task AttachAsync_IsoAsCdrom_ConnectsReadOnlyCdrom()
    {
        var path = _kvmd.AddImage("msdfleet/images/installer.iso");
        var driver = Driver();

        await driver.AttachAsync(0, path, cdrom: true, readOnly: true, Ct);

        Assert.Equal(("msdfleet/images/installer.iso", true, true, false), _kvmd.Drive);
        Assert.Contains("POST /msd/set_params?image=msdfleet%2Fimages%2Finstaller.iso&cdrom=1&rw=0", Posts());
        Assert.Equal(new DriveState(0, Main, 0, path, Cdrom: true, ReadOnly: true), Assert.Single(await driver.ReadDrivesAsync(Ct)));
    }

    [Fact]
    public async Task ReadDrivesAsync_NothingConnected_ReportsNoMedium()
    {
        var drive = Assert.Single(await Driver().ReadDrivesAsync(Ct));

        Assert.Null(drive.File);
        Assert.False(drive.HasMedium);
        Assert.Equal((0, Main, 0), (drive.Index, drive.Function, drive.Lun));
    }

    [Fact]
    public async Task EjectAsync_Connected_DisconnectsAndKeepsKvmdsSelection()
    {
        var path = _kvmd.AddImage("msdfleet/images/disk.img");
        var driver = Driver();
        await driver.AttachAsync(0, path, cdrom: false, readOnly: true, Ct);

        await driver.EjectAsync(0, Ct);

        Assert.Equal(("msdfleet/images/disk.img", false, false, false), _kvmd.Drive);
        Assert.Null(Assert.Single(await driver.ReadDrivesAsync(Ct)).File);
        Assert.Equal("POST /msd/set_connected?connected=0", Posts().Last());
    }

    [Fact]
    public async Task EjectAsync_NothingConnected_SendsNoCommand()
    {
        var driver = Driver();

        await driver.EjectAsync(0, Ct);
        await driver.EjectAsync(0, Ct);

        Assert.Empty(Posts());
        Assert.False(_kvmd.Drive.Connected);
    }

    [Fact]
    public async Task AttachAsync_AnotherImageConnected_DisconnectsItThenConnectsTheNewOne()
    {
        _kvmd.AddImage("other.img");
        var path = _kvmd.AddImage("msdfleet/images/mine.img");
        _kvmd.PresentBehindAgentsBack("other.img", cdrom: false, rw: true);

        await Driver().AttachAsync(0, path, cdrom: false, readOnly: true, Ct);

        Assert.Equal(
            ["POST /msd/set_connected?connected=0", "POST /msd/set_params?image=msdfleet%2Fimages%2Fmine.img&cdrom=0&rw=0", "POST /msd/set_connected?connected=1"],
            Posts());
        Assert.Equal(("msdfleet/images/mine.img", true, false, false), _kvmd.Drive);
    }

    [Fact]
    public async Task AttachAsync_KvmdAlreadyPresentsExactlyThat_SendsNoCommand()
    {
        var path = _kvmd.AddImage("msdfleet/images/mine.img");
        _kvmd.PresentBehindAgentsBack("msdfleet/images/mine.img", cdrom: false, rw: true);

        await Driver().AttachAsync(0, path, cdrom: false, readOnly: false, Ct);

        Assert.Empty(Posts());
        Assert.Equal(("msdfleet/images/mine.img", true, false, true), _kvmd.Drive);
    }

    [Fact]
    public async Task AttachAsync_SameImageOtherMode_ReconnectsInTheAskedMode()
    {
        var path = _kvmd.AddImage("msdfleet/images/mine.img");
        _kvmd.PresentBehindAgentsBack("msdfleet/images/mine.img", cdrom: false, rw: true);

        await Driver().AttachAsync(0, path, cdrom: false, readOnly: true, Ct);

        Assert.Equal(3, Posts().Count());
        Assert.Equal(("msdfleet/images/mine.img", true, false, false), _kvmd.Drive);
    }

    [Fact]
    public async Task AttachAsync_KvmdBusy_ThrowsBusyAndLeavesTheDriveAlone()
    {
        _kvmd.AddImage("other.img");
        var path = _kvmd.AddImage("msdfleet/images/mine.img");
        _kvmd.PresentBehindAgentsBack("other.img", cdrom: false, rw: true);
        _kvmd.Busy = true;

        await Assert.ThrowsAsync<GadgetBusyException>(() => Driver().AttachAsync(0, path, cdrom: false, readOnly: true, Ct));

        Assert.Equal(("other.img", true, false, true), _kvmd.Drive);
        Assert.Empty(Posts());
    }

    [Fact]
    public async Task AttachAsync_KvmdTurnsBusyMidway_Throws409AsBusy()
    {
        var path = _kvmd.AddImage("msdfleet/images/mine.img");
        _kvmd.OnRequest = line =>
        {
            if (line.StartsWith("POST /msd/set_params", StringComparison.Ordinal))
                _kvmd.Busy = true;
        };

        var ex = await Assert.ThrowsAsync<GadgetBusyException>(() => Driver().AttachAsync(0, path, cdrom: false, readOnly: true, Ct));

        Assert.Contains("MsdIsBusyError", ex.Message, StringComparison.Ordinal);
        Assert.False(_kvmd.Drive.Connected);
    }

    [Fact]
    public async Task EjectAsync_KvmdBusy_ThrowsBusyAndStaysConnected()
    {
        _kvmd.AddImage("other.img");
        _kvmd.PresentBehindAgentsBack("other.img", cdrom: false, rw: false);
        _kvmd.Busy = true;

        await Assert.ThrowsAsync<GadgetBusyException>(() => Driver().EjectAsync(0, Ct));

        Assert.True(_kvmd.Drive.Connected);
    }

    [Fact]
    public async Task ReadDrivesAsync_ChangedBehindOurBack_ReportsWhatKvmdPresents()
    {
        var mine = _kvmd.AddImage("msdfleet/images/mine.img");
        var other = _kvmd.AddImage("isos/other.iso");
        var driver = Driver();
        await driver.AttachAsync(0, mine, cdrom: false, readOnly: false, Ct);

        _kvmd.PresentBehindAgentsBack("isos/other.iso", cdrom: true, rw: false);

        Assert.Equal(new DriveState(0, Main, 0, other, Cdrom: true, ReadOnly: true), Assert.Single(await driver.ReadDrivesAsync(Ct)));
    }

    [Fact]
    public async Task ReadDrivesAsync_FileAttachedByHandOutsideStorage_ReportsAMediumThatIsNoImageOfOurs()
    {
        var path = _kvmd.AddImage("msdfleet/images/mine.img");
        _kvmd.AttachByHand("/home/admin/private.img", cdrom: false, rw: false);
        var driver = Driver();

        var drive = Assert.Single(await driver.ReadDrivesAsync(Ct));
        Assert.True(drive.HasMedium);
        Assert.False(drive.File!.StartsWith(_kvmd.StorageRoot, StringComparison.Ordinal));

        await driver.AttachAsync(0, path, cdrom: false, readOnly: true, Ct);
        Assert.Equal(("msdfleet/images/mine.img", true, false, false), _kvmd.Drive);
    }

    [Fact]
    public async Task AttachAsync_KvmdsUiConnectsAnImageMidway_ThrowsKvmdsError()
    {
        _kvmd.AddImage("other.img");
        var path = _kvmd.AddImage("msdfleet/images/mine.img");
        _kvmd.OnRequest = line =>
        {
            if (line.StartsWith("POST /msd/set_params", StringComparison.Ordinal))
                _kvmd.PresentBehindAgentsBack("other.img", cdrom: false, rw: false);
        };

        var ex = await Assert.ThrowsAsync<KvmdApiException>(() => Driver().AttachAsync(0, path, cdrom: false, readOnly: true, Ct));

        Assert.Equal("MsdConnectedError", ex.KvmdError);
        Assert.Contains("MSD is connected to Server", ex.Message, StringComparison.Ordinal);
        Assert.Equal(("other.img", true, false, false), _kvmd.Drive);
    }

    [Fact]
    public async Task ReadDrivesAsync_SocketGone_ThrowsUnavailableNamingTheSocket()
    {
        var driver = Driver();
        await _kvmd.StopAsync();

        var ex = await Assert.ThrowsAsync<GadgetUnavailableException>(() => driver.ReadDrivesAsync(Ct));

        Assert.Contains($"kvmd is not answering on {_kvmd.SocketPath}: is kvmd running?", ex.Message, StringComparison.Ordinal);
        Assert.Contains("the socket does not exist", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AttachAsync_NobodyListensOnTheSocket_ThrowsUnavailable()
    {
        using var dir = new TempDirectory();
        var socketPath = Path.Combine(dir.Path, "kvmd.sock");
        using var bound = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        bound.Bind(new UnixDomainSocketEndPoint(socketPath)); // bound but not listening: connect is refused
        var path = _kvmd.AddImage("msdfleet/images/mine.img");

        var ex = await Assert.ThrowsAsync<GadgetUnavailableException>(() => Driver(o => o.SocketPath = socketPath).AttachAsync(0, path, false, true, Ct));

        Assert.Contains($"kvmd is not answering on {socketPath}: is kvmd running?", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("does not exist", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ReadDrivesAsync_KvmdStalls_ThrowsUnavailableAfterTheRequestTimeout()
    {
        _kvmd.Stall = true;
        var driver = Driver(o => o.RequestTimeout = TimeSpan.FromMilliseconds(300));
        var watch = Stopwatch.StartNew();

        var ex = await Assert.ThrowsAsync<GadgetUnavailableException>(() => driver.ReadDrivesAsync(Ct));

        Assert.Contains("is kvmd running?", ex.Message, StringComparison.Ordinal);
        Assert.Contains("no answer within 0.3 s", ex.Message, StringComparison.Ordinal);
        Assert.InRange(watch.Elapsed, TimeSpan.FromMilliseconds(250), TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task ReadDrivesAsync_CallerCancels_ThrowsCancellationNotUnavailable()
    {
        _kvmd.Stall = true;
        using var cts = new CancellationTokenSource();
        _kvmd.OnRequest = _ => cts.Cancel();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Driver().ReadDrivesAsync(cts.Token));
    }

    [Theory]
    [InlineData(false, "reports its MSD offline")]
    [InlineData(true, "reports its MSD disabled")]
    public async Task ReadDrivesAsync_KvmdOfflineOrDisabled_ThrowsUnavailableNamingTheCause(bool disabled, string cause)
    {
        if (disabled)
            _kvmd.Disabled = true;
        else
            _kvmd.Offline = true;

        var ex = await Assert.ThrowsAsync<GadgetUnavailableException>(() => Driver().ReadDrivesAsync(Ct));

        Assert.Contains(cause, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ReadDrivesAsync_KvmdAnswersPlain500_ThrowsUnavailable()
    {
        _kvmd.Fail500 = true;

        var ex = await Assert.ThrowsAsync<GadgetUnavailableException>(() => Driver().ReadDrivesAsync(Ct));

        Assert.Contains("with 500", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("elsewhere/a.img")]
    [InlineData("msd-sibling/a.img")]
    [InlineData("msd/../a.img")]
    public async Task AttachAsync_PathOutsideStorageRoot_ThrowsWithoutAskingKvmd(string relativeToStandInFolder)
    {
        var path = Path.Combine(Path.GetDirectoryName(_kvmd.StorageRoot)!, relativeToStandInFolder);

        var ex = await Assert.ThrowsAsync<GadgetException>(() => Driver().AttachAsync(0, path, false, true, Ct));

        Assert.Contains($"is outside kvmd's storage {_kvmd.StorageRoot}", ex.Message, StringComparison.Ordinal);
        Assert.Contains("Gadget:Kvmd:StorageRoot", ex.Message, StringComparison.Ordinal);
        Assert.Empty(_kvmd.Requests);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AttachAsync_SymlinkInStorage_ThrowsBecauseKvmdNeverListsIt(bool linkedFolder)
    {
        var target = _kvmd.AddImage("real/disk.img");
        string image;
        if (linkedFolder)
        {
            Directory.CreateSymbolicLink(Path.Combine(_kvmd.StorageRoot, "msdfleet"), Path.GetDirectoryName(target)!);
            image = Path.Combine(_kvmd.StorageRoot, "msdfleet", "disk.img");
        }
        else
        {
            image = Path.Combine(_kvmd.StorageRoot, "msdfleet", "disk.img");
            Directory.CreateDirectory(Path.GetDirectoryName(image)!);
            File.CreateSymbolicLink(image, target);
        }

        var ex = await Assert.ThrowsAsync<GadgetException>(() => Driver().AttachAsync(0, image, false, true, Ct));

        Assert.Contains("symbolic link", ex.Message, StringComparison.Ordinal);
        Assert.Empty(Posts());
    }

    [Fact]
    public async Task ReadDrivesAsync_WrongPassword_ThrowsPermissionNamingTheSettingsNotThePassword()
    {
        await using var kvmd = await KvmdStandIn.StartAsync(user: "admin", password: "right-secret");
        var driver = Driver(o => (o.User, o.Password) = ("admin", "wrong-secret"), kvmd: kvmd);

        var ex = await Assert.ThrowsAsync<GadgetPermissionException>(() => driver.ReadDrivesAsync(Ct));

        Assert.Contains("403", ex.Message, StringComparison.Ordinal);
        Assert.Contains("Gadget:Kvmd:Password", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("secret", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ReadDrivesAsync_NoCredentialsWhereKvmdWantsThem_ThrowsPermission()
    {
        await using var kvmd = await KvmdStandIn.StartAsync(user: "admin", password: "right-secret");

        var ex = await Assert.ThrowsAsync<GadgetPermissionException>(() => Driver(kvmd: kvmd).ReadDrivesAsync(Ct));

        Assert.Contains("401", ex.Message, StringComparison.Ordinal);
        Assert.Contains("Gadget:Kvmd:User", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AttachAsync_RightPassword_ConnectsAndNeverLogsThePassword()
    {
        await using var kvmd = await KvmdStandIn.StartAsync(user: "admin", password: "right-secret");
        var path = kvmd.AddImage("msdfleet/images/mine.img");
        kvmd.HideFromScan("msdfleet/images/mine.img", requests: 2); // one retry, so the debug line is logged too
        var logger = new ListLogger<KvmdGadgetDriver>();
        var driver = Driver(o => (o.User, o.Password) = ("admin", "right-secret"), kvmd: kvmd, logger: logger);

        await driver.AttachAsync(0, path, false, false, Ct);
        await driver.EjectAsync(0, Ct);

        Assert.Equal(("msdfleet/images/mine.img", false, false, true), kvmd.Drive);
        Assert.True(logger.Lines.Count >= 3, string.Join('\n', logger.Lines));
        Assert.DoesNotContain(logger.Lines, line => line.Contains("right-secret", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("msdfleet/images/disk.iso", false, false)] // kvmd never writes an .iso
    [InlineData("msdfleet/images/disk.img", true, false)] // nor a CD-ROM
    [InlineData("msdfleet/images/disk.img", false, true)] // nor an image its user cannot write
    public async Task AttachAsync_WritableRequestKvmdMakesReadOnly_ThrowsAndConnectsNothing(string name, bool cdrom, bool notWritable)
    {
        var path = _kvmd.AddImage(name);
        if (notWritable)
            _kvmd.MarkNotWritable(name);

        var ex = await Assert.ThrowsAsync<GadgetException>(() => Driver().AttachAsync(0, path, cdrom, readOnly: false, Ct));

        Assert.Contains("read-only although drive 0 was asked to be writable", ex.Message, StringComparison.Ordinal);
        Assert.False(_kvmd.Drive.Connected);
        Assert.DoesNotContain("POST /msd/set_connected?connected=1", Posts());
    }

    [Fact]
    public async Task AttachAsync_ImageNotScannedYet_RetriesWithDoublingDelaysFromTheTimeProvider()
    {
        var path = _kvmd.AddImage("msdfleet/images/new.img");
        _kvmd.HideFromScan("msdfleet/images/new.img", requests: 3); // the first GET and two set_params miss it
        var time = new RecordingTimeProvider();
        var driver = Driver(o => o.UnknownImageRetryDelay = TimeSpan.FromMilliseconds(20), time: time);

        await driver.AttachAsync(0, path, false, true, Ct);

        Assert.Equal(("msdfleet/images/new.img", true, false, false), _kvmd.Drive);
        Assert.Equal(3, Posts().Count(p => p.StartsWith("POST /msd/set_params", StringComparison.Ordinal)));
        Assert.Contains(TimeSpan.FromMilliseconds(20), time.Timers);
        Assert.Contains(TimeSpan.FromMilliseconds(40), time.Timers);
    }

    [Fact]
    public async Task AttachAsync_ImageKvmdNeverKnows_ThrowsUnknownImageAfterTheRetries()
    {
        var path = _kvmd.AddImage("msdfleet/images/lost.img");
        _kvmd.HideFromScan("msdfleet/images/lost.img", requests: 1000);

        var ex = await Assert.ThrowsAsync<KvmdApiException>(() => Driver(o => o.UnknownImageRetries = 2).AttachAsync(0, path, false, true, Ct));

        Assert.Equal("MsdUnknownImageError", ex.KvmdError);
        Assert.Equal("The image is not found in the storage", ex.KvmdMessage);
        Assert.Equal(3, Posts().Count(p => p.StartsWith("POST /msd/set_params", StringComparison.Ordinal)));
        Assert.False(_kvmd.Drive.Connected);
    }

    [Fact]
    public async Task ReadDrivesAsync_ExtraDrives_RenumberedAfterKvmdsDriveWithoutKvmdsFunction()
    {
        var extra = new FakeExtraDrives(
            new DriveState(0, "mass_storage.usb1", 0, "/var/lib/kvmd/msd/a.img", false, true),
            new DriveState(1, Main, 0, null, false, false),
            new DriveState(2, "mass_storage.usb2", 0, null, true, true));

        var drives = await Driver(extra: extra).ReadDrivesAsync(Ct);

        Assert.Equal([0, 1, 2], drives.Select(d => d.Index));
        Assert.Equal((0, Main, (string?)null), (drives[0].Index, drives[0].Function, drives[0].File));
        Assert.Equal(extra.Drives[0] with { Index = 1 }, drives[1]);
        Assert.Equal(extra.Drives[2] with { Index = 2 }, drives[2]);
    }

    [Fact]
    public async Task AttachAndEjectAsync_ExtraDrive_RoutedToTheExtraDriverWithItsOwnIndex()
    {
        var extra = new FakeExtraDrives(
            new DriveState(0, "mass_storage.usb1", 0, null, false, false),
            new DriveState(1, Main, 0, null, false, false),
            new DriveState(2, "mass_storage.usb2", 0, null, false, false));
        var driver = Driver(extra: extra);

        await driver.AttachAsync(1, "/data/one.img", cdrom: false, readOnly: true, Ct);
        await driver.AttachAsync(2, "/data/two.iso", cdrom: true, readOnly: true, Ct);
        await driver.EjectAsync(1, Ct);

        Assert.Equal(["attach 0 /data/one.img cdrom=False ro=True", "attach 2 /data/two.iso cdrom=True ro=True", "eject 0"], extra.Calls);
        Assert.Empty(Posts());
    }

    [Fact]
    public async Task AttachAsync_DriveBeyondTheExtraDrives_ThrowsNotFound()
    {
        var extra = new FakeExtraDrives(new DriveState(0, "mass_storage.usb1", 0, null, false, false));

        await Assert.ThrowsAsync<GadgetNotFoundException>(() => Driver(extra: extra).AttachAsync(2, "/data/x.img", false, true, Ct));
        await Assert.ThrowsAsync<GadgetNotFoundException>(() => Driver().AttachAsync(1, "/data/x.img", false, true, Ct));
        await Assert.ThrowsAsync<GadgetNotFoundException>(() => Driver(extra: extra).EjectAsync(-1, Ct));
        Assert.Empty(extra.Calls);
    }

    [Fact]
    public async Task ReadHostStateAsync_DelegatesToTheExtraDriverElseNull()
    {
        var extra = new FakeExtraDrives { HostState = "configured" };

        Assert.Equal("configured", await Driver(extra: extra).ReadHostStateAsync(Ct));
        Assert.Null(await Driver().ReadHostStateAsync(Ct));
        Assert.False(await Driver(extra: extra).EnsureGadgetAsync(Ct));
        Assert.Empty(_kvmd.Requests);
    }

    [Fact]
    public async Task AttachAsync_BehindNginx_UsesTheApiPrefix()
    {
        await using var kvmd = await KvmdStandIn.StartAsync(behindNginx: true);
        var path = kvmd.AddImage("msdfleet/images/mine.img");
        var driver = Driver(o => o.Url = kvmd.Url, kvmd: kvmd);

        await driver.AttachAsync(0, path, false, true, Ct);

        Assert.Equal(path, Assert.Single(await driver.ReadDrivesAsync(Ct)).File);
        Assert.All(kvmd.Requests, r => Assert.Matches("^(GET|POST) /api/msd", r));
    }
}
