using MsdFleet.Protocol.Naming;

namespace MsdFleet.Protocol.Tests.Naming;

public class NameRulesTests
{
    [Theory]
    [InlineData("debian-12.8.0-amd64-netinst.iso")]
    [InlineData("Windows Server 2022 (eval).iso")]
    [InlineData("ubuntu…24.04 — ünïcode.img")]
    [InlineData("a")]
    [InlineData("..hidden")]
    public void TryValidateImageName_Reasonable_Accepted(string name) =>
        Assert.True(NameRules.TryValidateImageName(name, out var error), error);

    [Theory]
    [InlineData("", "empty")]
    [InlineData(".", "'.'")]
    [InlineData("..", "'.'")]
    [InlineData("../etc/passwd", "'/'")]
    [InlineData("a/b", "'/'")]
    [InlineData("a\\b", "'/'")]
    [InlineData("bad\u0001name", "U+0001")]
    [InlineData("line\nbreak", "U+000A")]
    [InlineData("del\u007f", "U+007F")]
    [InlineData("bidi\u202eosi.exe", "U+202E")]
    [InlineData(" leading", "whitespace")]
    [InlineData("trailing ", "whitespace")]
    public void TryValidateImageName_Bad_RejectedWithReason(string name, string reasonPart)
    {
        Assert.False(NameRules.TryValidateImageName(name, out var error));
        Assert.Contains(reasonPart, error, StringComparison.Ordinal);
    }

    [Fact]
    public void TryValidateImageName_LoneSurrogate_Rejected()
    {
        // Not an InlineData: test discovery would turn the lone surrogate into U+FFFD.
        Assert.False(NameRules.TryValidateImageName("lone\ud800surrogate", out var error));
        Assert.Contains("Unicode", error, StringComparison.Ordinal);
    }

    [Fact]
    public void TryValidateImageName_255BytesAccepted_256Rejected()
    {
        Assert.True(NameRules.TryValidateImageName(new string('a', 255), out _));
        Assert.False(NameRules.TryValidateImageName(new string('a', 256), out var error));
        Assert.Contains("256 bytes", error, StringComparison.Ordinal);
        // 128 two-byte characters are 256 bytes of UTF-8 though only 128 chars.
        Assert.False(NameRules.TryValidateImageName(new string('é', 128), out _));
    }

    [Theory]
    [InlineData("rack3-07", true)]
    [InlineData("pikvm.lab_1", true)]
    [InlineData("", false)]
    [InlineData("-rack", false)]
    [InlineData("rack/1", false)]
    [InlineData("rack+", false)]
    [InlineData("rack#", false)]
    [InlineData("räck", false)]
    public void TryValidateAgentId_Rules(string id, bool valid) =>
        Assert.Equal(valid, NameRules.TryValidateAgentId(id, out _));

    [Fact]
    public void TryValidateAgentId_TooLong_Rejected() =>
        Assert.False(NameRules.TryValidateAgentId(new string('a', 65), out _));
}
