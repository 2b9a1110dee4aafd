namespace MsdFleet.EdgeAgent.Tests;

/// <summary>The compile-time generated validators check both the attributes and IValidatableObject, as the reflection-based one did.</summary>
public class OptionsValidatorTests
{
    private static AgentOptions Valid() => new() { Id = "rack1-a", Secret = "s", CoordinatorUrl = new Uri("http://coordinator:8080/") };

    [Fact]
    public void ValidOptions_Pass() => Assert.True(new AgentOptionsValidator().Validate(null, Valid()).Succeeded);

    [Fact]
    public void AttributeRules_AndValidatableObjectRules_BothReported()
    {
        var options = Valid();
        options.Secret = "";
        options.VerifyBeforeAttach = "always";
        options.ParallelRequests = 0;
        options.StallTimeout = TimeSpan.FromMilliseconds(100);
        options.Id = "Not An Id";
        var result = new AgentOptionsValidator().Validate(null, options);
        Assert.True(result.Failed);
        var text = string.Join('\n', result.Failures!);
        Assert.Contains("Agent:Secret is required", text, StringComparison.Ordinal);
        Assert.Contains("Agent:VerifyBeforeAttach must be full, sampled or none.", text, StringComparison.Ordinal);
        Assert.Contains("ParallelRequests", text, StringComparison.Ordinal);
        Assert.Contains("Agent:StallTimeout must be at least one second.", text, StringComparison.Ordinal);
        Assert.Contains("Agent:Id is invalid", text, StringComparison.Ordinal);
    }
}
