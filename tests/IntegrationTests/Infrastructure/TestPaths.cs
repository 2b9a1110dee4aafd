using System.Net;
using System.Net.Sockets;

namespace MsdFleet.IntegrationTests.Infrastructure;

public static class TestPaths
{
    /// <summary>The repository root (where MsdFleet.sln is).</summary>
    public static string RepoRoot { get; } = FindRoot();

    /// <summary>Debug or Release, whichever this test assembly was built as; the agent was built the same way.</summary>
    public static string Configuration { get; } = AppContext.BaseDirectory.Contains("/Release/", StringComparison.Ordinal) ? "Release" : "Debug";

    public static string AgentDll => Path.Combine(RepoRoot, "src", "EdgeAgent", "bin", Configuration, "net10.0", "msdfleet-agent.dll");

    public static string CoordinatorDll => Path.Combine(RepoRoot, "src", "Coordinator", "bin", Configuration, "net10.0", "MsdFleet.Coordinator.dll");

    public static string CliDll => Path.Combine(RepoRoot, "src", "Cli", "bin", Configuration, "net10.0", "msdctl.dll");

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>A port whose next <paramref name="count"/> - 1 neighbours were free too (Swift uses several).</summary>
    public static int FreePortBlock(int count)
    {
        for (var attempt = 0; attempt < 50; attempt++)
        {
            var start = Random.Shared.Next(20000, 60000);
            var listeners = new List<TcpListener>();
            try
            {
                for (var i = 0; i < count; i++)
                {
                    var listener = new TcpListener(IPAddress.Loopback, start + i);
                    listener.Start();
                    listeners.Add(listener);
                }
                return start;
            }
            catch (SocketException)
            {
            }
            finally
            {
                listeners.ForEach(l => l.Stop());
            }
        }
        throw new InvalidOperationException("No block of free ports found.");
    }

    public static string NewTempDir(string name)
    {
        var path = Path.Combine(Path.GetTempPath(), "msdfleet-it", $"{name}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(path);
        return path;
    }

    private static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "MsdFleet.sln")))
            dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("MsdFleet.sln not found above " + AppContext.BaseDirectory);
    }
}
