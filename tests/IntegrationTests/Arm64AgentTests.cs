using MsdFleet.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// The agent as published for 64-bit Pis (self-contained linux-arm64) runs on an arm64 CPU:
/// scripts/arm64-agent-test.sh starts it under qemu-aarch64 with Debian's arm64 libc and drives a
/// configfs-like tree with its local tool.
/// </summary>
public sealed class Arm64AgentTests(ITestOutputHelper output)
{
    [Fact]
    public async Task PublishedArm64Agent_UnderQemuAarch64_AnswersDriveStatusAndDrivesTheTree()
    {
        var (exitCode, text) = await RepoScript.RunAsync("arm64-agent-test.sh", TimeSpan.FromMinutes(10));
        output.WriteLine(text);
        Assert.True(exitCode == 0, "arm64 agent test failed:\n" + text);
        foreach (var check in new[] { "arm64-binary", "status-answers", "host-state", "attach-writes-file", "attach-read-only", "eject-empties-file" })
            Assert.Contains($"CHECK {check} ok", text, StringComparison.Ordinal);
    }
}
