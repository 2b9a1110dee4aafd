using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.Protocol.Tests.Messages;

/// <summary>
/// The wire format pinned byte for byte. Agents and Coordinators of different versions meet in one
/// fleet: if one of these fails, a key was renumbered or a type changed. Append new keys instead.
/// </summary>
public class GoldenBytesTests
{
    private static readonly string Digest = "sha256:" + new string('a', 64);

    private const string DesiredHex =
        "9607919900d9477368613235363a6161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616101c3c3aa64656269616e2e69736fc2c0c0cf0000018bcfe56800c0c0c0";

    // The same state as encoded before key 3 (bandwidth override) was appended.
    private const string DesiredHexV1 =
        "9307919600d9477368613235363a6161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616101c3c3aa64656269616e2e69736fcf0000018bcfe56800";

    private const string ReportHex =
        "9aa3312e3081a47261636ba27231919e00d9477368613235363a6161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616102c2c3aa636f6e66696775726564c0c000c2c2c0c0c09192d9477368613235363a616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161612acd03e8cd07d09196d9477368613235363a61616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161010200c0c007a4626f6f6dcf0000018bcfe56801";

    // The same state and report as encoded before drives gained DiscardWrites (desired key 6) and
    // function, LUN, capabilities, working copy, host reads and snapshot (report drive keys 7–13), and
    // snapshot requests (desired key 7).
    private const string DesiredHexV2 =
        "9507919600d9477368613235363a6161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616101c3c3aa64656269616e2e69736fcf0000018bcfe56800c0c0";

    private const string ReportHexV1 =
        "9aa3312e3081a47261636ba27231919700d9477368613235363a6161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616102c2c3aa636f6e66696775726564c09192d9477368613235363a616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161612acd03e8cd07d09195d9477368613235363a61616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161010200c007a4626f6f6dcf0000018bcfe56801";

    // The state and report as encoded before pull policies (desired drive key 8), staged images (desired key 5) and
    // waiting transfers (transfer key 5).
    private const string DesiredHexV3 =
        "9507919800d9477368613235363a6161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616101c3c3aa64656269616e2e69736fc2c0cf0000018bcfe56800c0c0";

    private const string ReportHexV2 =
        "9aa3312e3081a47261636ba27231919e00d9477368613235363a6161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616102c2c3aa636f6e66696775726564c0c000c2c2c0c0c09192d9477368613235363a616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161612acd03e8cd07d09195d9477368613235363a61616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161010200c007a4626f6f6dcf0000018bcfe56801";

    private const string EventHex =
        "9700d9477368613235363a61616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161050aa16d01c0";

    private const string ManifestHex =
        "950103c420000000000000000000000000000000000000000000000000000000000000000096b266617374636463323032302d676561723634cd4000ce00010000ce0004000002cf4d5344466c6565749192c420010101010101010101010101010101010101010101010101010101010101010103";

    private static DesiredState SampleDesired => new()
    {
        Generation = 7,
        IssuedAtUnixMs = 1700000000000,
        Drives = [new DesiredDrive { Index = 0, ImageDigest = Digest, Mode = DriveMode.Cdrom, ReadOnly = true, Connected = true, ImageName = "debian.iso" }],
    };

    private static AgentReport SampleReport => new()
    {
        AgentVersion = "1.0",
        Labels = new Dictionary<string, string> { ["rack"] = "r1" },
        Drives = [new DriveReport { Index = 0, ImageDigest = Digest, Mode = DriveMode.Flash, ReadOnly = false, Connected = true, HostState = "configured" }],
        Cache = [new CachedImageReport { ImageDigest = Digest, Size = 42 }],
        FreeBytes = 1000,
        TotalBytes = 2000,
        Transfers = [new TransferReport { ImageDigest = Digest, BytesDone = 1, BytesTotal = 2, State = TransferState.Pulling }],
        AppliedGeneration = 7,
        LastError = "boom",
        ReportedAtUnixMs = 1700000000001,
    };

    [Fact]
    public void DesiredState_Serialize_MatchesGoldenBytes() =>
        Assert.Equal(DesiredHex, Convert.ToHexStringLower(ProtocolSerializer.Serialize(SampleDesired)));

    [Fact]
    public void DesiredState_DeserializeGoldenBytes_RoundTrips()
    {
        var decoded = ProtocolSerializer.Deserialize<DesiredState>(Convert.FromHexString(DesiredHex));
        Assert.Equal(7, decoded.Generation);
        Assert.Equal(SampleDesired.Drives[0], decoded.Drives[0]);
    }

    [Fact]
    public void DesiredState_EncodingBeforeKey3_StillDecodesWithNoOverride()
    {
        var decoded = ProtocolSerializer.Deserialize<DesiredState>(Convert.FromHexString(DesiredHexV1));
        Assert.Equal(SampleDesired.Drives[0], decoded.Drives[0]);
        Assert.Null(decoded.MaxBytesPerSecond);
    }

    [Fact]
    public void DesiredStateAndReport_EncodingBeforeWorkingCopies_StillDecode()
    {
        var desired = ProtocolSerializer.Deserialize<DesiredState>(Convert.FromHexString(DesiredHexV2));
        Assert.Equal(SampleDesired.Drives[0], desired.Drives[0]);
        Assert.False(desired.Drives[0].DiscardWrites);
        var report = ProtocolSerializer.Deserialize<AgentReport>(Convert.FromHexString(ReportHexV1));
        Assert.Equal(SampleReport.Drives[0], report.Drives[0]);
        Assert.Null(report.Drives[0].WorkingCopy);
    }

    [Fact]
    public void DesiredStateAndReport_EncodingBeforePullPolicies_StillDecode()
    {
        var desired = ProtocolSerializer.Deserialize<DesiredState>(Convert.FromHexString(DesiredHexV3));
        Assert.Equal(SampleDesired.Drives[0], desired.Drives[0]);
        Assert.Null(desired.Drives[0].Pull);
        Assert.Null(desired.Prefetch);
        var report = ProtocolSerializer.Deserialize<AgentReport>(Convert.FromHexString(ReportHexV2));
        Assert.Equal(SampleReport.Transfers[0], report.Transfers[0]);
        Assert.Null(report.Transfers[0].ResumesAtUnixMs);
    }

    [Fact]
    public void DriveReport_NewKeys_RoundTrip()
    {
        var drive = new DriveReport
        {
            Index = 1, Function = "mass_storage.usb1", Lun = 0, CdromCapable = true, WritableCapable = true,
            WorkingCopy = new WorkingCopyReport { BaseDigest = Digest, Size = 9, UnsavedWrites = true, Attached = true },
            HostRead = new HostReadReport { BytesRead = 3, LastReadUnixMs = 4, BytesWritten = 5 },
        };
        Assert.Equal(drive with { }, ProtocolSerializer.Deserialize<DriveReport>(ProtocolSerializer.Serialize(drive)) with { });
    }

    [Fact]
    public void AgentReport_Serialize_MatchesGoldenBytes() =>
        Assert.Equal(ReportHex, Convert.ToHexStringLower(ProtocolSerializer.Serialize(SampleReport)));

    [Fact]
    public void AgentReport_DeserializeGoldenBytes_RoundTrips()
    {
        var decoded = ProtocolSerializer.Deserialize<AgentReport>(Convert.FromHexString(ReportHex));
        Assert.Equal("r1", decoded.Labels["rack"]);
        Assert.Equal(SampleReport.Drives[0], decoded.Drives[0]);
        Assert.Equal(SampleReport.Transfers[0], decoded.Transfers[0]);
        Assert.Equal("boom", decoded.LastError);
    }

    [Fact]
    public void AgentEvent_Serialize_MatchesGoldenBytes()
    {
        var value = new AgentEvent { Kind = AgentEventKind.PullProgress, ImageDigest = Digest, BytesDone = 5, BytesTotal = 10, Message = "m", AtUnixMs = 1 };
        Assert.Equal(EventHex, Convert.ToHexStringLower(ProtocolSerializer.Serialize(value)));
    }

    [Fact]
    public void ImageManifest_Serialize_MatchesGoldenBytesAndDigest()
    {
        var manifest = new ImageManifest
        {
            Size = 3,
            Sha256 = new byte[32],
            Chunker = ChunkerParameters.Default,
            Chunks = [new ManifestChunk { Id = Enumerable.Repeat((byte)1, 32).ToArray(), Length = 3 }],
        };
        Assert.Equal(ManifestHex, Convert.ToHexStringLower(manifest.ToBytes()));
        Assert.Equal("sha256:f0148425e035a65b7d6c3492f4dd57d9efec69fde48e1111a6e1c35890b9cad2", ImageDigest.Compute(manifest.ToBytes()).ToString());
    }

    [Fact]
    public void DesiredState_OlderEncodingWithoutNewKeys_StillDecodes()
    {
        // A two-key array (generation, drives) from an older Coordinator: later keys take defaults.
        var decoded = ProtocolSerializer.Deserialize<DesiredState>(Convert.FromHexString("920790"));
        Assert.Equal(7, decoded.Generation);
        Assert.Empty(decoded.Drives);
        Assert.Equal(0, decoded.IssuedAtUnixMs);
    }
}
