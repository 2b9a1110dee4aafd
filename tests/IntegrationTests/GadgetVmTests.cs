using System.Diagnostics;
using MsdFleet.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// The agent's configfs driver against a real Linux kernel: scripts/gadget-vm-test.sh boots Debian's
/// kernel in qemu with dummy_hcd and runs the agent's own `drive` command inside; the VM's host side
/// must see the flash image as /dev/sdX and the ISO as /dev/srX with identical bytes, read-only, and
/// no medium after a forced eject while it holds the device open.
/// </summary>
public sealed class GadgetVmTests(ITestOutputHelper output)
{
    [Fact]
    public async Task DriveCommand_OnRealKernel_HostSeesExactBytesReadOnlyAndNoMediumAfterEject()
    {
        var script = Path.Combine(TestPaths.RepoRoot, "scripts", "gadget-vm-test.sh");
        using var process = Process.Start(new ProcessStartInfo(script) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false })!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(10));
        await process.WaitForExitAsync(timeout.Token);
        var text = await stdout + await stderr;
        output.WriteLine(text);
        Assert.True(process.ExitCode == 0, "gadget VM test failed:\n" + text);
        foreach (var check in new[] { "udc-bound", "flash-bytes", "flash-readonly", "host-configured", "eject-no-medium", "cdrom-device", "cdrom-bytes", "cdrom-readonly" })
            Assert.Contains($"CHECK {check} ok", text, StringComparison.Ordinal);
    }
}
