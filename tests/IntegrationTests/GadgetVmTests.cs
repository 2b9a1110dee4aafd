using MsdFleet.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// The agent's configfs driver against a real Linux kernel: scripts/gadget-vm-test.sh boots Debian's
/// kernel in qemu with dummy_hcd and runs the agent's own `drive` command inside; the VM's host side
/// must see the flash image as /dev/sdX and the ISO as /dev/srX with identical bytes, read-only, and
/// no medium after a forced eject while it holds the device open; the agent's host-read monitor must
/// report the host's reads and writes byte-exact on the right drive; a gentle eject must be refused
/// while the host holds the drive; two drives on two mass_storage functions work at once.
/// </summary>
public sealed class GadgetVmTests(ITestOutputHelper output)
{
    [Fact]
    public async Task DriveCommand_OnRealKernel_HostSeesExactBytesReadOnlyAndNoMediumAfterEject()
    {
        var (exitCode, text) = await RepoScript.RunAsync("gadget-vm-test.sh", TimeSpan.FromMinutes(10));
        output.WriteLine(text);
        Assert.True(exitCode == 0, "gadget VM test failed:\n" + text);
        foreach (var check in new[] { "udc-bound", "two-functions", "flash-bytes", "flash-readonly", "host-configured", "host-read-bytes-drive0", "host-read-seen-drive0",
                     "gentle-eject-refused-while-held", "eject-no-medium", "host-written-bytes-drive0", "both-drives-readable", "flash-ejected-gently",
                     "writes-in-backing-file", "cdrom-device", "cdrom-bytes", "cdrom-readonly" })
            Assert.Contains($"CHECK {check} ok", text, StringComparison.Ordinal);
    }
}
