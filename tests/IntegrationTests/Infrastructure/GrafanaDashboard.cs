using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace MsdFleet.IntegrationTests.Infrastructure;

/// <summary>
/// deploy/k8s/grafana/msdfleet-coordinator.json as the tests see it: its PromQL expressions and the metric
/// names they query. Read by the manifest tests (names against the instruments in the source) and by the
/// container test (names against a live scrape of a Coordinator pod).
/// </summary>
public static partial class GrafanaDashboard
{
    public static string PathIn(string repoRoot) => Path.Combine(repoRoot, "deploy", "k8s", "grafana", "msdfleet-coordinator.json");

    public static JsonObject Load(string repoRoot) =>
        JsonNode.Parse(File.ReadAllText(PathIn(repoRoot)))?.AsObject() ?? throw new InvalidDataException("The dashboard is not a JSON object.");

    /// <summary>Every <c>expr</c> of every panel target (rows' nested panels included).</summary>
    public static IReadOnlyList<string> Expressions(JsonObject dashboard)
    {
        ArgumentNullException.ThrowIfNull(dashboard);
        var expressions = new List<string>();
        void Walk(JsonArray? panels)
        {
            foreach (var panel in panels ?? [])
            {
                foreach (var target in panel?["targets"]?.AsArray() ?? [])
                    if (target?["expr"]?.GetValue<string>() is { Length: > 0 } expr)
                        expressions.Add(expr);
                Walk(panel?["panels"]?.AsArray());
            }
        }
        Walk(dashboard["panels"]?.AsArray());
        return expressions;
    }

    /// <summary>
    /// The metric names an expression selects: identifiers followed by a label matcher <c>{</c> (how every
    /// query in this dashboard names its series), so functions, labels and <c>by (…)</c> lists are not taken.
    /// </summary>
    public static IReadOnlySet<string> MetricNames(string expression) =>
        SeriesSelector().Matches(expression).Select(m => m.Groups["name"].Value).ToHashSet(StringComparer.Ordinal);

    public static IReadOnlySet<string> MetricNames(JsonObject dashboard) =>
        Expressions(dashboard).SelectMany(MetricNames).ToHashSet(StringComparer.Ordinal);

    [GeneratedRegex(@"(?<![A-Za-z0-9_:])(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{")]
    private static partial Regex SeriesSelector();
}
