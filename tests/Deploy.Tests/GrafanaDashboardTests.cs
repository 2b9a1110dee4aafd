using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using MsdFleet.Deploy.Tests.Infrastructure;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.Deploy.Tests;

/// <summary>
/// The dashboard parses, every panel queries the Prometheus datasource variable, and every metric it queries
/// is one the Coordinator exports: our own instruments are read from the source and named the way the
/// OpenTelemetry Prometheus exporter names them; the framework's come from the instrumentations
/// MetricsSetup registers. (The container test checks the same names against a live scrape.)
/// </summary>
public sealed partial class GrafanaDashboardTests
{
    private static readonly JsonObject Dashboard = GrafanaDashboard.Load(RepoPaths.Root);

    [Fact]
    public void Dashboard_Parses_AndEveryPanelQueriesTheDatasourceVariable()
    {
        Assert.Equal("msdfleet-coordinator", Dashboard["uid"]?.GetValue<string>());
        var variables = Dashboard["templating"]!["list"]!.AsArray().Select(v => v!["name"]!.GetValue<string>()).ToList();
        Assert.Contains("datasource", variables);
        var panels = Dashboard["panels"]!.AsArray();
        Assert.True(panels.Count >= 8, "a dashboard for fleet, publishing, content, GC, HTTP and runtime");
        Assert.Equal(panels.Count, panels.Select(p => p!["id"]!.GetValue<int>()).Distinct().Count());
        foreach (var panel in panels)
        {
            var title = panel!["title"]!.GetValue<string>();
            Assert.Equal("${datasource}", panel["datasource"]?["uid"]?.GetValue<string>());
            Assert.NotNull(panel["gridPos"]);
            var targets = panel["targets"]!.AsArray();
            Assert.True(targets.Count > 0, $"panel {title} has no query");
            Assert.All(targets, t => Assert.False(string.IsNullOrWhiteSpace(t!["expr"]?.GetValue<string>()), $"panel {title}: empty expr"));
            // Every query is scoped to the chosen namespace and replicas, so two installations never mix.
            Assert.All(targets, t => Assert.Contains("namespace=\"$namespace\"", t!["expr"]!.GetValue<string>(), StringComparison.Ordinal));
        }
    }

    [Fact]
    public void EveryQueriedMetric_IsExported_ByTheCoordinator()
    {
        var queried = GrafanaDashboard.MetricNames(Dashboard);
        var ours = CoordinatorSeries();
        var setup = File.ReadAllText(Path.Combine(RepoPaths.Root, "src", "Coordinator", "Observability", "MetricsSetup.cs"));

        Assert.Contains(queried, n => n.StartsWith("msdfleet_", StringComparison.Ordinal));
        foreach (var name in queried)
        {
            if (name.StartsWith("msdfleet_", StringComparison.Ordinal))
            {
                Assert.True(ours.Contains(name), $"the dashboard queries {name}, which the Coordinator does not export (it exports: {string.Join(", ", ours.Order(StringComparer.Ordinal))})");
                continue;
            }
            // Framework instruments: the exporter's names start with the meter's namespace.
            var instrumentation = name switch
            {
                _ when name.StartsWith("http_server_", StringComparison.Ordinal) || name.StartsWith("kestrel_", StringComparison.Ordinal) || name.StartsWith("aspnetcore_", StringComparison.Ordinal) => "AddAspNetCoreInstrumentation()",
                _ when name.StartsWith("http_client_", StringComparison.Ordinal) => "AddHttpClientInstrumentation()",
                _ when name.StartsWith("dotnet_", StringComparison.Ordinal) => "AddRuntimeInstrumentation()",
                _ => null,
            };
            Assert.True(instrumentation is not null && setup.Contains(instrumentation, StringComparison.Ordinal), $"the dashboard queries {name}, from no instrumentation MetricsSetup registers");
        }
        // Every one of our instruments is on the dashboard: an operator should see what the code measures.
        var families = ours.Select(s => HistogramSeries().Replace(s, "")).ToHashSet(StringComparer.Ordinal);
        Assert.All(families, f => Assert.Contains(queried, q => q == f || q.StartsWith(f + "_", StringComparison.Ordinal)));
    }

    [Fact]
    public void PrometheusNames_FollowTheExportersRules()
    {
        Assert.Equal(["msdfleet_agents_online"], PrometheusSeries("msdfleet.agents.online", "{agent}", "ObservableGauge"));
        Assert.Equal(["msdfleet_gc_freed_bytes_total"], PrometheusSeries("msdfleet.gc.freed", "By", "Counter"));
        Assert.Equal(["msdfleet_content_bytes_served_bytes_total"], PrometheusSeries("msdfleet.content.bytes_served", "By", "Counter"));
        Assert.Equal(["msdfleet_gc_duration_seconds_bucket", "msdfleet_gc_duration_seconds_count", "msdfleet_gc_duration_seconds_sum"],
            PrometheusSeries("msdfleet.gc.duration", "s", "Histogram").Order(StringComparer.Ordinal));
    }

    /// <summary>Every series name our own instruments produce, read from the Coordinator's source.</summary>
    private static HashSet<string> CoordinatorSeries()
    {
        var series = new HashSet<string>(StringComparer.Ordinal);
        foreach (var file in Directory.EnumerateFiles(Path.Combine(RepoPaths.Root, "src", "Coordinator"), "*.cs", SearchOption.AllDirectories))
        {
            var text = File.ReadAllText(file);
            foreach (Match m in Instrument().Matches(text))
            {
                // The unit is the first string literal after the name within the same statement (an observable
                // gauge's callback comes between them and holds no literal).
                var statement = text[(m.Index + m.Length)..text.IndexOf(';', m.Index)];
                var unit = StringLiteral().Match(statement) is { Success: true } u && LooksLikeUnit().IsMatch(u.Groups[1].Value) ? u.Groups[1].Value : "";
                series.UnionWith(PrometheusSeries(m.Groups["name"].Value, unit, m.Groups["kind"].Value));
            }
        }
        Assert.True(series.Count >= 8, "no instruments found in src/Coordinator: has the code moved?");
        return series;
    }

    /// <summary>
    /// The OpenTelemetry Prometheus exporter's naming: dots to underscores, the UCUM unit as a suffix
    /// (annotations in braces dropped, By → bytes, s → seconds), counters end in _total, histograms are
    /// _bucket/_sum/_count.
    /// </summary>
    private static List<string> PrometheusSeries(string name, string unit, string kind)
    {
        var prometheus = name.Replace('.', '_');
        var suffix = unit switch
        {
            "By" => "bytes",
            "s" => "seconds",
            "ms" => "milliseconds",
            "1" when kind.Contains("Gauge", StringComparison.Ordinal) => "ratio",
            _ => "",
        };
        if (suffix.Length > 0 && !prometheus.EndsWith("_" + suffix, StringComparison.Ordinal))
            prometheus += "_" + suffix;
        return kind switch
        {
            "Histogram" => [prometheus + "_bucket", prometheus + "_sum", prometheus + "_count"],
            "Counter" or "ObservableCounter" => [prometheus.EndsWith("_total", StringComparison.Ordinal) ? prometheus : prometheus + "_total"],
            _ => [prometheus],
        };
    }

    [GeneratedRegex("""Create(?<kind>Counter|Histogram|ObservableGauge|ObservableCounter|UpDownCounter|ObservableUpDownCounter|Gauge)(?:<[^>]+>)?\(\s*"(?<name>msdfleet\.[^"]+)"\s*""")]
    private static partial Regex Instrument();

    [GeneratedRegex("\"([^\"]*)\"")]
    private static partial Regex StringLiteral();

    [GeneratedRegex(@"^(\{[^}]*\}|By|s|ms|1|[A-Za-z]{1,4}(/[A-Za-z]{1,4})?)$")]
    private static partial Regex LooksLikeUnit();

    [GeneratedRegex("_(bucket|sum|count)$")]
    private static partial Regex HistogramSeries();
}
