using System.Diagnostics;
using System.Text;

namespace MsdFleet.IntegrationTests.Infrastructure;

/// <summary>
/// A real EdgeAgent process with its own storage root and a directory tree laid out like configfs.
/// <see cref="KillAsync"/> is SIGKILL: no shutdown code runs, as after a crash.
/// </summary>
public sealed class AgentProcess : IAsyncDisposable
{
    private readonly Dictionary<string, string> _environment;
    private readonly StringBuilder _log = new();
    private Process? _process;
    private readonly List<string> _drives = [];

    /// <param name="functions">mass_storage functions (usb0, usb1, … as kvmd names its extra drives), each with <paramref name="luns"/> LUNs.</param>
    public AgentProcess(string agentId, string secret, CoordinatorInstance coordinator, int luns = 1, long maxBytesPerSecond = 0, Uri? coordinatorUrl = null,
        int functions = 1)
    {
        AgentId = agentId;
        Root = TestPaths.NewTempDir("agent-" + agentId);
        var configfs = Path.Combine(Root, "configfs");
        LunPath = Path.Combine(configfs, "usb_gadget", "kvmd", "functions", "mass_storage.usb0", "lun.0");
        for (var f = 0; f < functions; f++)
        {
            for (var i = 0; i < luns; i++)
            {
                var lun = Path.Combine(configfs, "usb_gadget", "kvmd", "functions", $"mass_storage.usb{f}", $"lun.{i}");
                Directory.CreateDirectory(lun);
                _drives.Add(lun);
                foreach (var attr in new[] { "file", "cdrom", "ro", "removable", "forced_eject", "nofua", "inquiry_string" })
                    File.WriteAllText(Path.Combine(lun, attr), string.Empty);
            }
        }
        _environment = new Dictionary<string, string>
        {
            ["Agent__Id"] = agentId,
            ["Agent__Secret"] = secret,
            ["Agent__CoordinatorUrl"] = (coordinatorUrl ?? coordinator.BaseUrl).ToString(),
            ["Agent__StorageRoot"] = StorageRoot,
            ["Agent__MaxBytesPerSecond"] = maxBytesPerSecond.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["Agent__Labels__test"] = "true",
            ["Mqtt__Broker"] = coordinator.BrokerUrl.ToString(),
            ["Mqtt__TopicPrefix"] = coordinator.TopicPrefix,
            ["Gadget__ConfigfsRoot"] = configfs,
            ["Gadget__UdcClassRoot"] = Path.Combine(Root, "udc"),
            ["DOTNET_ENVIRONMENT"] = "Production",
            ["Logging__Console__FormatterName"] = "simple",
        };
    }

    public string AgentId { get; }
    public string Root { get; }
    public string StorageRoot => Path.Combine(Root, "storage");
    public string LunPath { get; }
    public bool HasExited => _process?.HasExited ?? true;

    /// <summary>The exit code once the process has ended.</summary>
    public int ExitCode => _process!.ExitCode;

    public string Log
    {
        get
        {
            lock (_log)
                return _log.ToString();
        }
    }

    public string Lun(string attribute) => File.ReadAllText(Path.Combine(LunPath, attribute)).Trim();

    /// <summary>
    /// What the server does through the gadget: writes into the file drive <paramref name="drive"/> presents,
    /// and (as the kernel does on every write) moves its mtime — by 2 s, so the test does not depend on the
    /// filesystem's timestamp granularity.
    /// </summary>
    public void HostWrites(int drive, long offset, byte[] data)
    {
        ArgumentNullException.ThrowIfNull(data);
        var file = Drive(drive, "file");
        using (var stream = new FileStream(file, FileMode.Open, FileAccess.Write, FileShare.ReadWrite))
        {
            stream.Position = offset;
            stream.Write(data);
            stream.Flush(true);
        }
        File.SetLastWriteTimeUtc(file, DateTime.UtcNow.AddSeconds(2));
    }

    /// <summary>An attribute of drive <paramref name="drive"/> (drives numbered across functions, as the agent does).</summary>
    public string Drive(int drive, string attribute) => File.ReadAllText(Path.Combine(_drives[drive], attribute)).Trim();

    public void SetEnvironment(string key, string value) => _environment[key] = value;

    /// <summary>Runs this executable (the NativeAOT build) instead of <c>dotnet msdfleet-agent.dll</c>.</summary>
    public string? Executable { get; set; }

    /// <summary>The process id while it runs (for /proc readings).</summary>
    public int ProcessId => _process!.Id;

    /// <summary>Runs from the configuration file <c>enroll</c> wrote, as on a device: no identity in the environment.</summary>
    public void UseConfigFile(string path)
    {
        foreach (var key in new[] { "Agent__Id", "Agent__Secret", "Agent__CoordinatorUrl", "Mqtt__Broker", "Mqtt__TopicPrefix" })
            _environment.Remove(key);
        _environment["MSDFLEET_AGENT_CONFIG"] = path;
    }

    /// <summary>Runs a one-shot agent command (<c>enroll …</c>, <c>drive …</c>) and returns its exit code and output.</summary>
    public static async Task<(int ExitCode, string Output, string Error)> RunCommandAsync(IEnumerable<string> args, IDictionary<string, string>? environment = null)
    {
        var info = new ProcessStartInfo("dotnet", [TestPaths.AgentDll, .. args])
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        info.Environment["MSDFLEET_ENROLL_TOKEN"] = string.Empty;
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
            info.Environment[key] = value;
        using var process = Process.Start(info)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await output, await error);
    }

    public void Start()
    {
        var info = new ProcessStartInfo(Executable ?? "dotnet", Executable is null ? [TestPaths.AgentDll] : [])
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = Root,
        };
        foreach (var (key, value) in _environment)
            info.Environment[key] = value;
        _process = Process.Start(info)!;
        _process.OutputDataReceived += (_, e) => Append(e.Data);
        _process.ErrorDataReceived += (_, e) => Append(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public async Task KillAsync()
    {
        if (_process is null || _process.HasExited)
            return;
        _process.Kill(entireProcessTree: true);
        await _process.WaitForExitAsync();
    }

    public async Task StopGracefullyAsync()
    {
        if (_process is null || _process.HasExited)
            return;
        Process.Start("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        await _process.WaitForExitAsync(timeout.Token);
    }

    private void Append(string? line)
    {
        if (line is null)
            return;
        lock (_log)
            _log.AppendLine(line);
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _process?.Dispose();
        try
        {
            Directory.Delete(Root, true);
        }
        catch (IOException)
        {
        }
    }
}
