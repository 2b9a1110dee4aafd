using System.Text.Json;
using MsdFleet.Protocol.IO;

namespace MsdFleet.Cli;

/// <summary>
/// Where msdctl finds its Coordinator: <c>~/.config/msdctl/config.json</c> (mode 0600, written by
/// <c>msdctl login</c>), overridden by <c>MSDCTL_SERVER</c>, <c>MSDCTL_TOKEN</c>, <c>MSDCTL_CA</c>, and
/// by <c>--config FILE</c> / <c>MSDCTL_CONFIG</c> for the file's own location.
/// </summary>
public sealed record CliConfig(string? Server, string? Token, string? CaFile)
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { WriteIndented = true };

    public static string DefaultPath =>
        Environment.GetEnvironmentVariable("MSDCTL_CONFIG") is { Length: > 0 } custom ? custom
        : Path.Combine(Environment.GetEnvironmentVariable("XDG_CONFIG_HOME") is { Length: > 0 } xdg ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".config"), "msdctl", "config.json");

    public static CliConfig Load(string? path)
    {
        path ??= DefaultPath;
        CliConfig file = new(null, null, null);
        if (File.Exists(path))
        {
            try
            {
                file = JsonSerializer.Deserialize<CliConfig>(File.ReadAllText(path), Json) ?? file;
            }
            catch (JsonException ex)
            {
                throw new CliException(ExitCodes.Usage, $"{path} is not valid JSON ({ex.Message}); fix or delete it and run msdctl login.");
            }
        }
        return new CliConfig(
            Env("MSDCTL_SERVER") ?? file.Server,
            Env("MSDCTL_TOKEN") ?? file.Token,
            Env("MSDCTL_CA") ?? file.CaFile);
    }

    public void Save(string? path)
    {
        path ??= DefaultPath;
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        AtomicFile.Write(path, JsonSerializer.SerializeToUtf8Bytes(this, Json), UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }

    private static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;
}

/// <summary>msdctl's exit codes, for scripts.</summary>
public static class ExitCodes
{
    public const int Ok = 0;
    public const int Failure = 1;
    public const int Usage = 2;
    public const int Unauthorized = 3;
    public const int NotFound = 4;
    public const int Conflict = 5;
    public const int Unreachable = 6;
    public const int VerificationFailed = 7;
}

public sealed class CliException(int exitCode, string message, string? code = null) : Exception(message)
{
    public int ExitCode { get; } = exitCode;

    /// <summary>The Coordinator's problem code, when the error came from it.</summary>
    public string? Code { get; } = code;

    public CliException() : this(ExitCodes.Failure, "failed") { }

    public CliException(string message) : this(ExitCodes.Failure, message) { }

    public CliException(string message, Exception innerException) : this(ExitCodes.Failure, message) => _ = innerException;
}
