using System.Text;
using MsdFleet.Coordinator.Integrations;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Messaging;

/// <summary>
/// Who may publish and subscribe where on the broker — the one definition. The embedded broker enforces it
/// (<see cref="Allows"/>, <see cref="AllowsSubscription"/>) and <see cref="RenderMosquitto"/> writes the same
/// rules as a Mosquitto <c>acl_file</c>, so an external broker grants exactly what the embedded one does.
/// Everything not granted is refused.
/// </summary>
public sealed class BrokerAcl
{
    /// <summary>The user name agents log in with stands for their agent id in agent rules (Mosquitto's <c>%u</c>).</summary>
    public const string AgentPlaceholder = "%u";

    private readonly List<Rule> _rules = [];

    public BrokerAcl(TopicNames topics, string? coordinatorUser, HomeAssistantOptions? homeAssistant)
    {
        ArgumentNullException.ThrowIfNull(topics);
        var prefix = topics.Prefix;
        if (!string.IsNullOrEmpty(coordinatorUser))
        {
            Add(Principal.User(coordinatorUser), Access.ReadWrite, $"{prefix}/#");
            if (homeAssistant is { Enabled: true })
                Add(Principal.User(coordinatorUser), Access.ReadWrite, $"{homeAssistant.DiscoveryPrefix}/#");
        }
        if (homeAssistant is { Enabled: true })
        {
            // Home Assistant: reads discovery and state, writes only commands and its own birth message.
            var ha = Principal.User(HomeAssistantOptions.MqttUser);
            Add(ha, Access.Read, $"{homeAssistant.DiscoveryPrefix}/#");
            Add(ha, Access.Write, $"{homeAssistant.DiscoveryPrefix}/status");
            Add(ha, Access.Read, $"{prefix}/ha/#");
            if (homeAssistant.Commands)
            {
                Add(ha, Access.Write, $"{prefix}/ha/+/+/+/set");
                Add(ha, Access.Write, $"{prefix}/ha/+/+/+/press");
            }
        }
        // Agents: their own status (and last will), report and events; they read only their desired state.
        var agent = Principal.Agents;
        // (The leaves TopicNames gives an agent's topics; the placeholder is no agent id, so it is spliced here.)
        var own = $"{prefix}/agents/{AgentPlaceholder}";
        Add(agent, Access.Write, $"{own}/status");
        Add(agent, Access.Write, $"{own}/reported");
        Add(agent, Access.Write, $"{own}/events");
        Add(agent, Access.Read, $"{own}/desired");
    }

    [Flags]
    public enum Access
    {
        Read = 1,
        Write = 2,
        ReadWrite = Read | Write,
    }

    /// <summary>A named user, or (<see cref="Agents"/>) every agent, with <see cref="AgentPlaceholder"/> as its id.</summary>
    public sealed record Principal(string? Name)
    {
        public static readonly Principal Agents = new((string?)null);

        public static Principal User(string name) => new(name);
    }

    public sealed record Rule(Principal Principal, Access Access, string Filter);

    public IReadOnlyList<Rule> Rules => _rules;

    private void Add(Principal principal, Access access, string filter) => _rules.Add(new Rule(principal, access, filter));

    /// <summary>May <paramref name="user"/> (an agent id unless it names a user with rules) publish to <paramref name="topic"/>?</summary>
    public bool Allows(string user, string topic, Access access)
    {
        ArgumentNullException.ThrowIfNull(user);
        ArgumentNullException.ThrowIfNull(topic);
        if (topic.Contains('+', StringComparison.Ordinal) || topic.Contains('#', StringComparison.Ordinal))
            return false;
        return RulesFor(user).Any(r => r.Access.HasFlag(access) && Covers(r.Filter, topic));
    }

    /// <summary>May <paramref name="user"/> subscribe to <paramref name="filter"/>: is every topic it matches readable?</summary>
    public bool AllowsSubscription(string user, string filter)
    {
        ArgumentNullException.ThrowIfNull(user);
        ArgumentNullException.ThrowIfNull(filter);
        return RulesFor(user).Any(r => r.Access.HasFlag(Access.Read) && Covers(r.Filter, filter));
    }

    private IEnumerable<Rule> RulesFor(string user)
    {
        var named = _rules.Where(r => r.Principal.Name == user).ToList();
        if (named.Count > 0)
            return named;
        // Anyone else is an agent; the placeholder becomes its id (agent ids contain no '/', '+' or '#').
        return _rules.Where(r => r.Principal == Principal.Agents).Select(r => r with { Filter = r.Filter.Replace(AgentPlaceholder, user, StringComparison.Ordinal) });
    }

    /// <summary>Does the rule's filter match every topic that <paramref name="filter"/> (a topic or a filter) matches?</summary>
    public static bool Covers(string rule, string filter)
    {
        ArgumentNullException.ThrowIfNull(rule);
        ArgumentNullException.ThrowIfNull(filter);
        var r = rule.Split('/');
        var f = filter.Split('/');
        for (var i = 0; i < r.Length; i++)
        {
            if (r[i] == "#")
                return true;
            if (i >= f.Length)
                return false;
            if (r[i] == "+")
            {
                if (f[i] == "#")
                    return false;
                continue;
            }
            if (r[i] != f[i])
                return false;
        }
        return r.Length == f.Length;
    }

    /// <summary>The rules as a Mosquitto <c>acl_file</c>: <c>user</c> blocks, then agent <c>pattern</c> lines.</summary>
    public string RenderMosquitto()
    {
        var builder = new StringBuilder();
        builder.AppendLine("# Generated by the MsdFleet Coordinator from the rules its embedded broker enforces.");
        builder.AppendLine("# Agents log in with their agent id as user name; anything not listed is refused.");
        foreach (var group in _rules.Where(r => r.Principal.Name is not null).GroupBy(r => r.Principal.Name))
        {
            builder.AppendLine($"user {group.Key}");
            foreach (var rule in group)
                builder.AppendLine($"topic {Word(rule.Access)} {rule.Filter}");
            builder.AppendLine();
        }
        foreach (var rule in _rules.Where(r => r.Principal == Principal.Agents))
            builder.AppendLine($"pattern {Word(rule.Access)} {rule.Filter}");
        return builder.ToString();
    }

    private static string Word(Access access) => access switch
    {
        Access.Read => "read",
        Access.Write => "write",
        _ => "readwrite",
    };
}
