using System.Diagnostics;

namespace MsdFleet.IntegrationTests.Infrastructure;

/// <summary>Builds real ISO 9660 images with xorriso (installed by scripts/test.sh).</summary>
public static class IsoBuilder
{
    public static async Task BuildAsync(string tree, string output, params string[] extra)
    {
        var xorriso = new[] { "/usr/bin/xorriso", "/usr/local/bin/xorriso" }.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("xorriso is not installed: run scripts/test.sh (it installs it with apt).");
        string[] args = ["-as", "mkisofs", "-quiet", "-R", "-J", "-V", "MSDFLEET_TEST", .. extra, "-o", output, tree];
        using var process = Process.Start(new ProcessStartInfo(xorriso, args) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false })!;
        var stderr = process.StandardError.ReadToEndAsync();
        await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"xorriso failed: {await stderr}");
    }
}
