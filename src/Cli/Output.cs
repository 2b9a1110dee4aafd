using System.Text.Json;
using System.Text.Json.Nodes;
using Spectre.Console;

namespace MsdFleet.Cli;

/// <summary>Human output through Spectre.Console, or with --json one JSON document on stdout for scripts.</summary>
public static class Output
{
    private static readonly JsonSerializerOptions Indented = new(JsonSerializerDefaults.Web) { WriteIndented = true };

    public static void Json(object? value) =>
        Console.Out.WriteLine(value is JsonNode node ? node.ToJsonString(Indented) : JsonSerializer.Serialize(value, Indented));

    public static void Error(IReadOnlyList<string> args, string message, string? code)
    {
        if (args.Contains("--json"))
        {
            Console.Out.WriteLine(JsonSerializer.Serialize(new { error = message, code }, Indented));
            return;
        }
        var err = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        err.MarkupLineInterpolated($"[red]error:[/] {message}");
    }

    public static string Bytes(long? n)
    {
        if (n is null)
            return "–";
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double v = n.Value;
        var i = 0;
        while (v >= 1024 && i < units.Length - 1)
        {
            v /= 1024;
            i++;
        }
        return i == 0 ? $"{n} B" : $"{v:0.0} {units[i]}";
    }

    public static string Str(JsonNode? node) => node switch
    {
        null => "",
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        _ => node.ToJsonString(),
    };
}
