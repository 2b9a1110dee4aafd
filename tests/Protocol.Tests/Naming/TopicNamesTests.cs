using MsdFleet.Protocol.Naming;

namespace MsdFleet.Protocol.Tests.Naming;

public class TopicNamesTests
{
    private readonly TopicNames _topics = new();

    [Fact]
    public void Builders_UseDesignLayout()
    {
        Assert.Equal("msdfleet/v1/agents/rack1/status", _topics.Status("rack1"));
        Assert.Equal("msdfleet/v1/agents/rack1/reported", _topics.Reported("rack1"));
        Assert.Equal("msdfleet/v1/agents/rack1/desired", _topics.Desired("rack1"));
        Assert.Equal("msdfleet/v1/agents/rack1/events", _topics.Events("rack1"));
        Assert.Equal("msdfleet/v1/agents/+/reported", _topics.AllReported);
    }

    [Theory]
    [InlineData("a/b")]
    [InlineData("+")]
    [InlineData("#")]
    [InlineData("")]
    public void Builders_WildcardOrSeparatorInId_Throw(string id) =>
        Assert.Throws<ArgumentException>(() => _topics.Desired(id));

    [Theory]
    [InlineData("x/+")]
    [InlineData("x/#")]
    [InlineData("/x")]
    [InlineData("x/")]
    public void Constructor_BadPrefix_Throws(string prefix) =>
        Assert.Throws<ArgumentException>(() => new TopicNames(prefix));

    [Fact]
    public void TryParseAgentTopic_RoundTripsAndRejectsOthers()
    {
        Assert.True(_topics.TryParseAgentTopic("msdfleet/v1/agents/rack1/reported", out var id, out var leaf));
        Assert.Equal(("rack1", "reported"), (id, leaf));
        Assert.False(_topics.TryParseAgentTopic("msdfleet/v1/agents/rack1/reported/extra", out _, out _));
        Assert.False(_topics.TryParseAgentTopic("other/v1/agents/rack1/reported", out _, out _));
        Assert.False(_topics.TryParseAgentTopic("msdfleet/v1/agents//reported", out _, out _));
    }
}
