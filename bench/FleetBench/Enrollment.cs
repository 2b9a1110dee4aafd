using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;

namespace MsdFleet.FleetBench;

/// <summary>
/// Enrolls simulated devices the way a rack of Pis is enrolled: fleet tokens (<c>POST /api/v1/enrollments</c> with
/// <c>maxDevices</c>, at most 10,000 each, with the label the rollout selects on), then one <c>POST /api/v1/enroll</c>
/// per device with its own id — each gets its own secret and Mosquitto hash.
/// </summary>
public static class Enrollment
{
    /// <summary>The label every benchmark agent carries; the rollout's selector.</summary>
    public const string Label = "bench";

    private const int MaxPerToken = 10_000;

    public static string AgentId(string prefix, int index) => string.Create(CultureInfo.InvariantCulture, $"{prefix}-{index:D5}");

    public static async Task<List<(string Id, string Secret)>> EnrollAsync(CoordinatorApi api, string prefix, int from, int count, string labelValue,
        CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        var result = new ConcurrentBag<(string, string)>();
        for (var start = from; start < from + count; start += MaxPerToken)
        {
            var size = Math.Min(MaxPerToken, from + count - start);
            var token = (await api.PostAsync("api/v1/enrollments", new
            {
                maxDevices = size, agentIdPattern = prefix + "-*", expiresInHours = 2, labels = new Dictionary<string, string> { [Label] = labelValue },
            }, ct))["token"]!.GetValue<string>();
            // A handful at a time, as devices booting together would: the Coordinator serializes the writes anyway.
            await Parallel.ForEachAsync(Enumerable.Range(start, size), new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = ct },
                async (i, c) => result.Add((AgentId(prefix, i), await api.EnrollAsync(token, AgentId(prefix, i), c))));
        }
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"  enrolled {count} agents with fleet tokens in {clock.Elapsed.TotalSeconds:F1} s ({count / clock.Elapsed.TotalSeconds:F0}/s)"));
        return result.OrderBy(a => a.Item1, StringComparer.Ordinal).ToList();
    }

    public static async Task WriteAsync(string path, IEnumerable<(string Id, string Secret)> agents) =>
        await File.WriteAllLinesAsync(path, agents.Select(a => $"{a.Id} {a.Secret}"));

    public static async Task<List<(string Id, string Secret)>> ReadAsync(string path) =>
        (await File.ReadAllLinesAsync(path)).Where(l => l.Length > 0).Select(l => l.Split(' ')).Select(p => (p[0], p[1])).ToList();
}
