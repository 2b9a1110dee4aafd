using System.Diagnostics;

namespace MsdFleet.IntegrationTests.Infrastructure;

/// <summary>
/// Runs podman (and kubectl) the way scripts/build-image.sh does on these machines: with
/// deploy/container/containers.conf (runc, no default ulimits). Not installed means the test fails with
/// a message naming the package (scripts/test.sh installs them), never a skip.
/// </summary>
public static class Podman
{
    public static string ContainersConf => Path.Combine(TestPaths.RepoRoot, "deploy", "container", "containers.conf");

    public static async Task<(int ExitCode, string Output)> RunAsync(TimeSpan timeout, params string[] args)
    {
        var (code, output, _) = await RunToolAsync("podman", timeout, args);
        return (code, output);
    }

    /// <summary>Runs a command; returns its exit code, all its output (stdout, then stderr) and stdout alone; throws on a timeout.</summary>
    public static async Task<(int ExitCode, string Output, string Stdout)> RunToolAsync(string file, TimeSpan timeout, params string[] args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in args)
            start.ArgumentList.Add(arg);
        start.Environment["CONTAINERS_CONF"] = ContainersConf;
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InvalidOperationException($"{file} is not installed: run scripts/test.sh (it installs podman, runc, catatonit and debootstrap with apt). {ex.Message}", ex);
        }
        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            using var cancel = new CancellationTokenSource(timeout);
            try
            {
                await process.WaitForExitAsync(cancel.Token);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish within {timeout.TotalSeconds:0} s");
            }
            return (process.ExitCode, await stdout + await stderr, await stdout);
        }
    }

    /// <summary>Like <see cref="RunToolAsync"/> but a non-zero exit is an exception carrying the output; returns stdout.</summary>
    public static async Task<string> CheckedAsync(string file, TimeSpan timeout, params string[] args)
    {
        var (code, output, stdout) = await RunToolAsync(file, timeout, args);
        if (code != 0)
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} exited {code}:\n{output}");
        return stdout;
    }
}
