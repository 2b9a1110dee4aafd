using System.Security.Cryptography;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.FleetSimulator;

/// <summary>Many <see cref="SimulatedAgent"/>s in one process, connected with bounded parallelism.</summary>
public sealed class SimulatedFleet : IAsyncDisposable
{
    private readonly List<SimulatedAgent> _agents = [];

    public SimulatedFleet(IEnumerable<(string Id, string Secret, IReadOnlyDictionary<string, string>? Labels)> agents, Uri broker, TopicNames topics, ECDsa trusted)
    {
        ArgumentNullException.ThrowIfNull(agents);
        foreach (var (id, secret, labels) in agents)
            _agents.Add(new SimulatedAgent(id, secret, broker, topics, trusted, labels));
    }

    public IReadOnlyList<SimulatedAgent> Agents => _agents;

    public SimulatedAgent this[string id] => _agents.Single(a => a.Id == id);

    /// <summary>Connects every agent, at most <paramref name="parallel"/> handshakes at a time.</summary>
    public async Task ConnectAsync(int parallel = 64, CancellationToken cancellationToken = default)
    {
        await Parallel.ForEachAsync(_agents, new ParallelOptions { MaxDegreeOfParallelism = parallel, CancellationToken = cancellationToken },
            async (agent, ct) => await agent.ConnectAsync(ct));
    }

    public async ValueTask DisposeAsync()
    {
        await Parallel.ForEachAsync(_agents, new ParallelOptions { MaxDegreeOfParallelism = 64 }, async (agent, _) => await agent.DisposeAsync());
    }
}
