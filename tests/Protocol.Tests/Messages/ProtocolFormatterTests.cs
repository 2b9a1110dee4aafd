using System.Buffers;
using MessagePack;
using MessagePack.Resolvers;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Serialization;
using MsdFleet.Protocol.Signing;
using Xunit;

namespace MsdFleet.Protocol.Tests.Messages;

/// <summary>
/// The written-out formatters (<see cref="ProtocolResolver"/>) against MessagePack's own dynamic
/// resolver, which reads the <c>[Key]</c> attributes: the same bytes for every wire type, fully populated
/// and all-default, and the same values from every shorter (older) encoding and a longer (newer) one.
/// </summary>
public class ProtocolFormatterTests
{
    private static readonly MessagePackSerializerOptions Dynamic = MessagePackSerializerOptions.Standard.WithSecurity(MessagePackSecurity.UntrustedData);

    private static readonly SnapshotRequest Snapshot = new() { Id = "req-1", Name = "saved.img" };

    private static readonly object[] Populated =
    [
        new DesiredState
        {
            Generation = 42, IssuedAtUnixMs = 1_700_000_000_123, MaxBytesPerSecond = 5_000_000, AgentId = "rack3-07",
            Drives =
            [
                new DesiredDrive { Index = 0, ImageDigest = "sha256:" + new string('a', 64), Mode = DriveMode.Cdrom, ReadOnly = true, Connected = true, ImageName = "debian.iso" },
                new DesiredDrive { Index = 3, Mode = DriveMode.Flash, ReadOnly = false, DiscardWrites = true, Snapshot = Snapshot },
                new DesiredDrive { Index = 4, ImageDigest = "sha256:" + new string('9', 64), Pull = new PullPolicy { MaxBytesPerSecond = 1000, Windows = [new DownloadWindow { Days = 3, StartSecond = 79200, EndSecond = 21600, TimeZone = "Europe/Amsterdam" }] } },
            ],
            Prefetch = [new PrefetchImage { ImageDigest = "sha256:" + new string('8', 64), ImageName = "next.iso", Pull = new PullPolicy { Windows = [new DownloadWindow()] } }],
        },
        new PullPolicy(),
        new DownloadWindow { Days = 1, StartSecond = 1, EndSecond = 2 },
        new PrefetchImage { ImageDigest = "d" },
        new DesiredDrive { Index = 7, ImageDigest = "sha256:" + new string('b', 64), Mode = DriveMode.Flash, ReadOnly = false, Connected = true, ImageName = "x", DiscardWrites = true, Snapshot = Snapshot },
        Snapshot,
        new AgentReport
        {
            AgentVersion = "0.1.0", Labels = new Dictionary<string, string> { ["site"] = "ams1", ["rack"] = "r3" }, FreeBytes = long.MaxValue, TotalBytes = 1L << 40,
            AppliedGeneration = 41, LastError = "disk full", ReportedAtUnixMs = 1_700_000_000_999,
            Drives =
            [
                new DriveReport
                {
                    Index = 1, ImageDigest = "sha256:" + new string('c', 64), Mode = DriveMode.Flash, ReadOnly = false, Connected = true, HostState = "configured",
                    Error = "busy", Function = "mass_storage.usb1", Lun = 2, CdromCapable = true, WritableCapable = true,
                    WorkingCopy = new WorkingCopyReport { BaseDigest = "sha256:" + new string('d', 64), Size = 123456789, UnsavedWrites = true, Attached = true },
                    HostRead = new HostReadReport { BytesRead = 3145728, LastReadUnixMs = 17, BytesWritten = 1048576, BytesEstimated = true },
                    Snapshot = new SnapshotReport { Id = "req-1", State = SnapshotState.Failed, BytesDone = 1, BytesTotal = 2, BytesSent = 3, ImageName = "n", ImageDigest = "d", Error = "e" },
                },
                new DriveReport { Index = 0 },
            ],
            Cache = [new CachedImageReport { ImageDigest = "sha256:" + new string('e', 64), Size = 4_294_967_296 }],
            Transfers = [new TransferReport { ImageDigest = "sha256:" + new string('f', 64), BytesDone = 10, BytesTotal = 20, State = TransferState.Verifying, Error = "x" },
                new TransferReport { ImageDigest = "w", State = TransferState.Waiting, ResumesAtUnixMs = 123 }],
        },
        new HostReadReport(),
        new AgentEvent { Kind = AgentEventKind.SnapshotFailed, ImageDigest = "sha256:1", BytesDone = -1, BytesTotal = int.MaxValue + 1L, Message = "m", AtUnixMs = 5, Drive = 7 },
        new AgentEvent { Kind = AgentEventKind.PullProgress },
        new ImageManifest
        {
            Size = 300_000, Sha256 = new byte[32], Chunker = new ChunkerParameters { MinSize = 1024, AverageSize = 4096, MaxSize = 16384, NormalizationLevel = 1, GearSeed = ulong.MaxValue },
            Chunks = [new ManifestChunk { Id = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray(), Length = 65536 }, new ManifestChunk { Id = new byte[32], Length = 1 }],
        },
        ChunkerParameters.Default,
        new ImageLayout { Sources = ["api/v1/packs/a?sig=1", "https://s3/b"], Chunks = [new ChunkLocation { Source = 1, Offset = 1L << 33 }, default], ExpiresAtUnixMs = 99 },
        new SignedDesiredState { Payload = [1, 2, 3], Signature = new byte[64], KeyId = "key-1" },
    ];

    public static TheoryData<int> Cases() => new(Enumerable.Range(0, Populated.Length));

    [Fact]
    public void EveryWireTypeHasAWrittenOutFormatterAndATestValue()
    {
        var wireTypes = typeof(DesiredState).Assembly.GetTypes().Where(t => t.GetCustomAttributes(typeof(MessagePackObjectAttribute), false).Length > 0).ToHashSet();
        Assert.Equal(wireTypes.OrderBy(t => t.Name), ProtocolResolver.Types.OrderBy(t => t.Name));
        var tested = Populated.Select(v => v.GetType()).Append(typeof(DriveReport)).Append(typeof(CachedImageReport)).Append(typeof(TransferReport))
            .Append(typeof(WorkingCopyReport)).Append(typeof(SnapshotReport)).Append(typeof(ManifestChunk)).Append(typeof(ChunkLocation)).ToHashSet();
        Assert.Subset(tested, wireTypes);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void WritesTheBytesTheDynamicResolverWrites(int index)
    {
        var value = Populated[index];
        var type = value.GetType();
        var expected = MessagePackSerializer.Serialize(type, value, Dynamic);
        Assert.Equal(Convert.ToHexString(expected), Convert.ToHexString(MessagePackSerializer.Serialize(type, value, ProtocolSerializer.Options)));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ReadsEveryOlderAndNewerEncodingAsTheDynamicResolverDoes(int index)
    {
        var value = Populated[index];
        var type = value.GetType();
        var full = MessagePackSerializer.Serialize(type, value, Dynamic);
        var reader = new MessagePackReader(full);
        var keys = reader.ReadArrayHeader();
        var elements = new List<byte[]>();
        for (var i = 0; i < keys; i++)
        {
            var start = reader.Consumed;
            reader.Skip();
            elements.Add(full.AsSpan((int)start, (int)(reader.Consumed - start)).ToArray());
        }
        // Every prefix of the keys (what an older peer sends) and one unknown extra key (a newer peer).
        for (var n = 0; n <= keys + 1; n++)
        {
            var buffer = new ArrayBufferWriter<byte>();
            var writer = new MessagePackWriter(buffer);
            writer.WriteArrayHeader(n);
            writer.Flush();
            foreach (var element in elements.Take(n))
                buffer.Write(element);
            if (n == keys + 1)
                buffer.Write(MessagePackSerializer.Serialize("from a newer version"));
            var bytes = buffer.WrittenMemory;
            object? byDynamic, byOurs;
            try
            {
                byDynamic = MessagePackSerializer.Deserialize(type, bytes, Dynamic);
            }
            catch (MessagePackSerializationException)
            {
                continue; // the dynamic resolver cannot build it either (a struct short of keys)
            }
            byOurs = MessagePackSerializer.Deserialize(type, bytes, ProtocolSerializer.Options);
            Assert.Equal(Convert.ToHexString(MessagePackSerializer.Serialize(type, byDynamic, Dynamic)),
                Convert.ToHexString(MessagePackSerializer.Serialize(type, byOurs, Dynamic)));
        }
    }

    [Fact]
    public void NilObjectsAndListsStayNull()
    {
        var bytes = MessagePackSerializer.Serialize(new object?[] { 1L, null, 0L, null, null });
        var state = ProtocolSerializer.Deserialize<DesiredState>(bytes);
        Assert.Null(state.Drives);
        Assert.Throws<ProtocolFormatException>(() => ProtocolSerializer.Deserialize<DesiredState>(MessagePackSerializer.Serialize<object?>(null)));
    }

    [Fact]
    public void DeepNestingIsRefusedInUntrustedMode()
    {
        // Drives -> DesiredDrive -> SnapshotRequest is 3 levels; a limit of 2 must refuse it.
        var options = ProtocolSerializer.Options.WithSecurity(MessagePackSecurity.UntrustedData.WithMaximumObjectGraphDepth(2));
        var bytes = MessagePackSerializer.Serialize((DesiredState)Populated[0], ProtocolSerializer.Options);
        Assert.Throws<MessagePackSerializationException>(() => MessagePackSerializer.Deserialize<DesiredState>(bytes, options));
    }

    [Fact]
    public void TheDynamicResolverIsNotNeededForWireTypes()
    {
        var noDynamic = new MessagePackSerializerOptions(CompositeResolver.Create(ProtocolResolver.Instance, BuiltinResolver.Instance));
        foreach (var value in Populated)
        {
            var bytes = MessagePackSerializer.Serialize(value.GetType(), value, noDynamic);
            Assert.Equal(bytes, MessagePackSerializer.Serialize(value.GetType(), MessagePackSerializer.Deserialize(value.GetType(), bytes, noDynamic), noDynamic));
        }
    }
}
