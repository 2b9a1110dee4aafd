using System.Globalization;

namespace MsdFleet.FleetBench;

/// <summary><c>--name value</c> pairs; a missing required one is a <see cref="BenchException"/> naming it.</summary>
public sealed class Arguments
{
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);

    public Arguments(IEnumerable<string> args)
    {
        using var e = args.GetEnumerator();
        while (e.MoveNext())
        {
            var name = e.Current;
            if (!name.StartsWith("--", StringComparison.Ordinal) || !e.MoveNext())
                throw new BenchException($"expected --name value pairs, got '{name}'");
            _values[name[2..]] = e.Current;
        }
    }

    public string? Optional(string name) => _values.GetValueOrDefault(name);

    public string Text(string name, string? fallback = null) =>
        _values.GetValueOrDefault(name) ?? fallback ?? throw new BenchException($"--{name} is required");

    public int Number(string name, int? fallback = null) =>
        _values.TryGetValue(name, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : fallback ?? throw new BenchException($"--{name} is required");

    public Uri Uri(string name) => new(Text(name));
}
