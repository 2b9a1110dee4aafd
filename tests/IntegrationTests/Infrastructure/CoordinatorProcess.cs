using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;

namespace MsdFleet.IntegrationTests.Infrastructure;

/// <summary>
/// A Coordinator in its own process (the published dll, as a replica runs), for what an in-process host
/// cannot show: <see cref="Kill"/> is SIGKILL — no shutdown code runs, the database sessions and advisory
/// locks it held end only because the kernel closes its sockets.
/// </summary>
public sealed class CoordinatorProcess : IAsyncDisposable
{
    private readonly StringBuilder _log = new();
    private readonly Process _process;

    private CoordinatorProcess(string workDir, IEnumerable<string> args)
    {
        HttpPort = TestPaths.FreePort();
        WorkDir = workDir;
        var start = new ProcessStartInfo("dotnet") { WorkingDirectory = workDir, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(TestPaths.CoordinatorDll);
        foreach (var arg in (string[])[$"--Urls={BaseUrl}", $"--Auth:BootstrapAdminToken={CoordinatorInstance.AdminToken}", "--Tls:Mode=off",
            $"--Tls:Directory={Path.Combine(workDir, "tls")}", "--Logging:Console:FormatterName=simple", .. args])
            start.ArgumentList.Add(arg);
        start.Environment["DOTNET_ENVIRONMENT"] = "Production";
        _process = new Process { StartInfo = start };
        _process.OutputDataReceived += (_, e) => Append(e.Data);
        _process.ErrorDataReceived += (_, e) => Append(e.Data);
    }

    public int HttpPort { get; }
    public string WorkDir { get; }
    public Uri BaseUrl => new($"http://127.0.0.1:{HttpPort}/");
    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;

    public string Log
    {
        get
        {
            lock (_log)
                return _log.ToString();
        }
    }

    private void Append(string? line)
    {
        if (line is null)
            return;
        lock (_log)
            _log.AppendLine(line);
    }

    /// <summary>Starts the process and waits until <c>/readyz</c> answers 200.</summary>
    public static async Task<CoordinatorProcess> StartAsync(params string[] args)
    {
        var coordinator = new CoordinatorProcess(TestPaths.NewTempDir("coordinator-process"), args);
        coordinator._process.Start();
        coordinator._process.BeginOutputReadLine();
        coordinator._process.BeginErrorReadLine();
        using var probe = new HttpClient { BaseAddress = coordinator.BaseUrl, Timeout = TimeSpan.FromSeconds(5) };
        await Eventually.WaitAsync(async () =>
        {
            if (coordinator.HasExited)
                throw new InvalidOperationException($"The Coordinator exited with {coordinator._process.ExitCode}:\n{coordinator.Log}");
            try
            {
                using var ready = await probe.GetAsync("readyz");
                return ready.IsSuccessStatusCode;
            }
            catch (HttpRequestException)
            {
                return false;
            }
        }, TimeSpan.FromSeconds(60), "the Coordinator process to be ready", () => coordinator.Log);
        return coordinator;
    }

    public HttpClient NewClient(string? bearer = CoordinatorInstance.AdminToken)
    {
        var client = new HttpClient { BaseAddress = BaseUrl, Timeout = TimeSpan.FromMinutes(5) };
        if (bearer is not null)
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
        return client;
    }

    /// <summary>SIGKILL, and waits for the process to be gone.</summary>
    public async Task KillAsync()
    {
        if (!_process.HasExited)
            _process.Kill(entireProcessTree: true);
        await _process.WaitForExitAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _process.Dispose();
        try
        {
            Directory.Delete(WorkDir, true);
        }
        catch (IOException)
        {
        }
    }
}
