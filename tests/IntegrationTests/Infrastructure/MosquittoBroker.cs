using System.Diagnostics;
using System.Net.Sockets;

namespace MsdFleet.IntegrationTests.Infrastructure;

/// <summary>
/// A real Mosquitto on a free loopback port, owned by the test. Not installed means the test fails
/// with a clear message (scripts/test.sh installs it); it never silently skips.
/// </summary>
public sealed class MosquittoBroker : IAsyncDisposable
{
    private Process _process;
    private readonly string _dir;

    private MosquittoBroker(Process process, string dir, int port)
    {
        _process = process;
        _dir = dir;
        Port = port;
    }

    public int Port { get; }
    public Uri Url => new($"{(_tls ? "mqtts" : "mqtt")}://127.0.0.1:{Port}");
    private bool _tls;

    /// <summary>
    /// Starts Mosquitto; with <paramref name="passwordFile"/> and <paramref name="aclFile"/> it authenticates and
    /// enforces the ACL; with <paramref name="tls"/> (PEM certificate and key) its only listener speaks TLS.
    /// </summary>
    public static async Task<MosquittoBroker> StartAsync(string? passwordFile = null, string? aclFile = null, (string Certificate, string Key)? tls = null)
    {
        var binary = new[] { "/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto" }.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("Mosquitto is not installed: run scripts/test.sh (it installs it with apt) or apt-get install mosquitto.");
        var dir = TestPaths.NewTempDir("mosquitto");
        var port = TestPaths.FreePort();
        var config = Path.Combine(dir, "mosquitto.conf");
        await File.WriteAllTextAsync(config, $"""
            listener {port} 127.0.0.1
            {(tls is { } t ? $"certfile {t.Certificate}\nkeyfile {t.Key}" : "")}
            allow_anonymous {(passwordFile is null ? "true" : "false")}
            {(passwordFile is null ? "" : "password_file " + passwordFile)}
            {(aclFile is null ? "" : "acl_file " + aclFile)}
            persistence false
            max_queued_messages 0
            user {Environment.UserName}
            log_dest file {Path.Combine(dir, "mosquitto.log")}
            """);
        var process = Process.Start(new ProcessStartInfo(binary, ["-c", config]) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true })!;
        var broker = new MosquittoBroker(process, dir, port) { _tls = tls is not null };
        await Eventually.WaitAsync(async () =>
        {
            if (process.HasExited)
                throw new InvalidOperationException($"Mosquitto exited with {process.ExitCode}: {await process.StandardError.ReadToEndAsync()}");
            using var client = new TcpClient();
            try
            {
                await client.ConnectAsync("127.0.0.1", port);
                return true;
            }
            catch (SocketException)
            {
                return false;
            }
        }, TimeSpan.FromSeconds(10), "Mosquitto to accept connections");
        return broker;
    }

    /// <summary>Kills the broker (SIGKILL: sessions and, with persistence off, retained messages are gone) and starts it again on the same port.</summary>
    public async Task RestartAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
        var binary = _process.StartInfo.FileName;
        _process = Process.Start(new ProcessStartInfo(binary, ["-c", Path.Combine(_dir, "mosquitto.conf")])
            { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true })!;
        await Eventually.WaitAsync(async () =>
        {
            using var client = new TcpClient();
            try
            {
                await client.ConnectAsync("127.0.0.1", Port);
                return true;
            }
            catch (SocketException)
            {
                return false;
            }
        }, TimeSpan.FromSeconds(10), "Mosquitto to accept connections again");
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
        try
        {
            Directory.Delete(_dir, true);
        }
        catch (IOException)
        {
        }
    }
}
