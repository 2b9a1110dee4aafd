using MsdFleet.Coordinator.Integrations;
using MsdFleet.Coordinator.Messaging;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Tests.Messaging;

public sealed class BrokerAclTests
{
    [Theory]
    [InlineData("p/agents/a/status", "p/agents/a/status", true)]
    [InlineData("p/agents/a/status", "p/agents/a/status/x", false)]
    [InlineData("p/agents/a/status", "p/agents/a", false)]
    [InlineData("p/#", "p/agents/a/status", true)]
    [InlineData("p/#", "p/+/a/#", true)]
    [InlineData("p/#", "q/x", false)]
    [InlineData("p/ha/+/+/+/set", "p/ha/a/0/mount/set", true)]
    [InlineData("p/ha/+/+/+/set", "p/ha/a/0/set", false)]
    [InlineData("p/ha/+/+/+/set", "p/ha/+/0/mount/set", true)]
    [InlineData("p/ha/+/+/+/set", "p/ha/#", false)]
    [InlineData("p/agents/a/desired", "p/agents/+/desired", false)]
    [InlineData("p/agents/a/desired", "#", false)]
    public void Covers_ARuleCoversAFilterOnlyIfItMatchesEveryTopicTheFilterDoes(string rule, string filter, bool covered) =>
        Assert.Equal(covered, BrokerAcl.Covers(rule, filter));

    [Fact]
    public void Rules_AgentsGetTheirOwnLeavesOnly_HomeAssistantItsCommands_AndMosquittoGetsTheSameLines()
    {
        var acl = new BrokerAcl(new TopicNames("site/v1"), "coordinator", new HomeAssistantOptions { Enabled = true, Commands = true });
        Assert.True(acl.Allows("rack1-07", "site/v1/agents/rack1-07/reported", BrokerAcl.Access.Write));
        Assert.False(acl.Allows("rack1-07", "site/v1/agents/rack1-07/desired", BrokerAcl.Access.Write));
        Assert.False(acl.Allows("rack1-07", "site/v1/agents/rack1-08/reported", BrokerAcl.Access.Write));
        Assert.False(acl.Allows("rack1-07", "site/v1/agents/+/reported", BrokerAcl.Access.Write)); // no wildcards in a topic
        Assert.True(acl.AllowsSubscription("rack1-07", "site/v1/agents/rack1-07/desired"));
        Assert.False(acl.AllowsSubscription("rack1-07", "site/v1/agents/rack1-07/#"));
        Assert.True(acl.Allows("coordinator", "site/v1/agents/rack1-07/desired", BrokerAcl.Access.Write));
        Assert.True(acl.Allows(HomeAssistantOptions.MqttUser, "site/v1/ha/rack1-07/0/image/set", BrokerAcl.Access.Write));
        Assert.False(acl.Allows(HomeAssistantOptions.MqttUser, "site/v1/agents/rack1-07/desired", BrokerAcl.Access.Write));

        var mosquitto = acl.RenderMosquitto();
        Assert.Contains("user coordinator\ntopic readwrite site/v1/#\n", mosquitto.ReplaceLineEndings("\n"), StringComparison.Ordinal);
        foreach (var leaf in new[] { "write site/v1/agents/%u/status", "write site/v1/agents/%u/reported", "write site/v1/agents/%u/events", "read site/v1/agents/%u/desired" })
            Assert.Contains("pattern " + leaf + "\n", mosquitto.ReplaceLineEndings("\n"), StringComparison.Ordinal);
        Assert.Equal(acl.Rules.Count, mosquitto.Split('\n').Count(l => l.StartsWith("topic ", StringComparison.Ordinal) || l.StartsWith("pattern ", StringComparison.Ordinal)));
    }
}
