using MsdFleet.Protocol.Naming;

namespace MsdFleet.Protocol.Tests.Naming;

public sealed class LabelSelectorTests
{
    private static readonly Dictionary<string, string> Ams1Rack1 = new() { ["site"] = "ams1", ["rack"] = "r1", ["env"] = "prod" };
    private static readonly Dictionary<string, string> Ams1Rack3Maintenance = new() { ["site"] = "ams1", ["rack"] = "r3", ["maintenance"] = "" };
    private static readonly Dictionary<string, string> Fra2 = new() { ["site"] = "fra2", ["example.com/role"] = "build" };

    [Theory]
    [InlineData("", true, true, true)]
    [InlineData("site=ams1", true, true, false)]
    [InlineData("site==ams1", true, true, false)]
    [InlineData("site!=ams1", false, false, true)]
    [InlineData("site=ams1,rack in (r1,r2),!maintenance", true, false, false)]
    [InlineData("rack notin (r1)", false, true, true)]
    [InlineData("maintenance", false, true, false)]
    [InlineData("!maintenance", true, false, true)]
    [InlineData("example.com/role=build", false, false, true)]
    [InlineData("  site = ams1 ,  env  ", true, false, false)]
    [InlineData("site in (ams1, fra2)", true, true, true)]
    public void Matches_LikeKubernetesLabelSelectors(string selector, bool rack1, bool rack3, bool fra2)
    {
        var parsed = LabelSelector.Parse(selector);
        Assert.Equal((rack1, rack3, fra2), (parsed.Matches(Ams1Rack1), parsed.Matches(Ams1Rack3Maintenance), parsed.Matches(Fra2)));
        // The canonical form parses to the same selector.
        Assert.Equal(parsed.ToString(), LabelSelector.Parse(parsed.ToString()).ToString());
    }

    [Theory]
    [InlineData("site=", "site=")] // an empty value is a value
    [InlineData("a,b,c", "a,b,c")]
    [InlineData("rack in (r1,r1,r2)", "rack in (r1,r2)")]
    public void Canonical(string selector, string canonical) => Assert.Equal(canonical, LabelSelector.Parse(selector).ToString());

    [Theory]
    [InlineData("site=ams1,", "position 11: expected a label key, found the end")]
    [InlineData("site=ams1 rack=r1", "expected ',' or the end after the value")]
    [InlineData("site ams1", "expected '=', '==', '!=', 'in' or 'notin'")]
    [InlineData("site in r1", "expected '(' to open the value list")]
    [InlineData("site in (r1", "expected ',' or ')' in the value list")]
    [InlineData("site!ams1", "expected '=' after '!'")]
    [InlineData("-site=ams1", "label key '-site' is invalid")]
    [InlineData("site=ams 1", "expected ',' or the end after the value")]
    [InlineData("site=-ams1", "label value '-ams1' is invalid")]
    [InlineData("Example.COM/role=x", "invalid prefix")]
    [InlineData(",", "expected a label key")]
    public void Malformed_IsRefusedWithWhereAndWhat(string selector, string message)
    {
        Assert.False(LabelSelector.TryParse(selector, out _, out var error));
        Assert.Contains(message, error, StringComparison.Ordinal);
        Assert.Throws<FormatException>(() => LabelSelector.Parse(selector));
    }

    [Fact]
    public void Labels_Validate_Merge_CentralWins()
    {
        Assert.True(Labels.TryValidate(new Dictionary<string, string> { ["site"] = "ams1", ["maintenance"] = "" }, out _));
        Assert.False(Labels.TryValidate(new Dictionary<string, string> { ["site"] = "ams 1" }, out var error));
        Assert.Contains("'ams 1'", error, StringComparison.Ordinal);
        Assert.False(Labels.TryValidate(Enumerable.Range(0, 65).ToDictionary(i => $"k{i}", _ => "v"), out error));
        Assert.Contains("at most 64", error, StringComparison.Ordinal);
        var merged = Labels.Merge(new Dictionary<string, string> { ["site"] = "lab", ["rack"] = "r9" }, new Dictionary<string, string> { ["site"] = "ams1" });
        Assert.Equal(new Dictionary<string, string> { ["site"] = "ams1", ["rack"] = "r9" }, merged);
    }
}
