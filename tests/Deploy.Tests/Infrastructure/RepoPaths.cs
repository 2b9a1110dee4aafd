namespace MsdFleet.Deploy.Tests.Infrastructure;

public static class RepoPaths
{
    /// <summary>The repository root (where MsdFleet.sln is).</summary>
    public static string Root { get; } = FindRoot();

    public static string K8s => Path.Combine(Root, "deploy", "k8s");

    private static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "MsdFleet.sln")))
            dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("MsdFleet.sln not found above " + AppContext.BaseDirectory);
    }
}
