namespace MsdFleet.Protocol.Naming;

/// <summary>
/// Every MQTT topic name, built in one place: <c>{prefix}/agents/{agentId}/{status|reported|desired|events}</c>.
/// Agent ids are checked against <see cref="NameRules"/>, so no parameter can smuggle in '/', '+' or '#'.
/// </summary>
public sealed class TopicNames
{
    public const string DefaultPrefix = "msdfleet/v1";

    public TopicNames(string prefix = DefaultPrefix)
    {
        ArgumentException.ThrowIfNullOrEmpty(prefix);
        if (prefix.Contains('+', StringComparison.Ordinal) || prefix.Contains('#', StringComparison.Ordinal)
            || prefix.StartsWith('/') || prefix.EndsWith('/'))
            throw new ArgumentException("The topic prefix may not contain '+' or '#' or start or end with '/'.", nameof(prefix));
        Prefix = prefix;
    }

    public string Prefix { get; }

    public string Status(string agentId) => Agent(agentId, "status");
    public string Reported(string agentId) => Agent(agentId, "reported");
    public string Desired(string agentId) => Agent(agentId, "desired");
    public string Events(string agentId) => Agent(agentId, "events");

    /// <summary>The subtree an agent may publish under: <c>{prefix}/agents/{agentId}/</c>.</summary>
    public string AgentSubtree(string agentId) => Agent(agentId, string.Empty);

    public string AllStatus => $"{Prefix}/agents/+/status";
    public string AllReported => $"{Prefix}/agents/+/reported";
    public string AllEvents => $"{Prefix}/agents/+/events";

    /// <summary>Splits an agent topic into agent id and leaf, or returns false for any other topic.</summary>
    public bool TryParseAgentTopic(string topic, out string agentId, out string leaf)
    {
        agentId = leaf = string.Empty;
        var head = Prefix + "/agents/";
        if (!topic.StartsWith(head, StringComparison.Ordinal))
            return false;
        var rest = topic.AsSpan(head.Length);
        var slash = rest.IndexOf('/');
        if (slash <= 0 || rest[(slash + 1)..].Contains('/'))
            return false;
        var id = rest[..slash].ToString();
        if (!NameRules.TryValidateAgentId(id, out _))
            return false;
        agentId = id;
        leaf = rest[(slash + 1)..].ToString();
        return true;
    }

    private string Agent(string agentId, string leaf)
    {
        if (!NameRules.TryValidateAgentId(agentId, out var error))
            throw new ArgumentException(error, nameof(agentId));
        return $"{Prefix}/agents/{agentId}/{leaf}";
    }
}
