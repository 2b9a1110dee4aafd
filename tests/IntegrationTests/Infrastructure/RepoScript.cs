using System.Diagnostics;

namespace MsdFleet.IntegrationTests.Infrastructure;

/// <summary>Runs one of the repository's check scripts (they print "CHECK name ok|FAIL" lines) and returns its exit code and output.</summary>
public static class RepoScript
{
    public static async Task<(int ExitCode, string Output)> RunAsync(string script, TimeSpan timeout, params string[] args)
    {
        var path = Path.Combine(TestPaths.RepoRoot, "scripts", script);
        using var process = Process.Start(new ProcessStartInfo(path, args) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false })!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cancel = new CancellationTokenSource(timeout);
        await process.WaitForExitAsync(cancel.Token);
        return (process.ExitCode, await stdout + await stderr);
    }
}
