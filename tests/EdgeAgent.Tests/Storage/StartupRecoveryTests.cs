using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using MsdFleet.EdgeAgent.Gadget;
using MsdFleet.EdgeAgent.Reconciliation;
using MsdFleet.EdgeAgent.Storage;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Tests.Storage;

public sealed class StartupRecoveryTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private static (ImageDigest Digest, ImageManifest Manifest, byte[] Data) Image(int seed)
    {
        var data = new byte[1000];
        new Random(seed).NextBytes(data);
        var manifest = new ImageManifest
        {
            Size = data.Length,
            Sha256 = SHA256.HashData(data),
            Chunker = ChunkerParameters.Default,
            Chunks = [new ManifestChunk { Id = SHA256.HashData(data), Length = data.Length }],
        };
        return (ImageDigest.Compute(manifest.ToBytes()), manifest, data);
    }

    [Fact]
    public async Task RunAsync_RemovesLeftovers_QuarantinesUnvouched_EjectsCorruptAttached_KeepsWantedPartial()
    {
        var store = new LocalImageStore(Path.Combine(_dir.Path, "storage"));
        var gadgetOptions = new GadgetOptions { ConfigfsRoot = Path.Combine(_dir.Path, "configfs"), UdcClassRoot = Path.Combine(_dir.Path, "udc") };
        var lun = Path.Combine(gadgetOptions.ConfigfsRoot, "usb_gadget", "kvmd", "functions", "mass_storage.usb0", "lun.0");
        Directory.CreateDirectory(lun);
        foreach (var attr in new[] { "file", "cdrom", "ro", "forced_eject" })
            File.WriteAllText(Path.Combine(lun, attr), string.Empty);
        var gadget = new ConfigfsGadgetDriver(gadgetOptions);

        var wanted = Image(1);
        var unwanted = Image(2);
        var noManifest = Image(3);
        var corrupt = Image(4);
        var desired = new DesiredState { Generation = 1, Drives = [new DesiredDrive { Index = 0, ImageDigest = wanted.Digest.ToString(), Mode = DriveMode.Flash }] };
        File.WriteAllText(Path.Combine(store.IncomingPath, "garbage.part"), "x");
        File.WriteAllText(store.JournalPath(noManifest.Digest), "journal without data");
        File.WriteAllText(store.PartialPath(unwanted.Digest), "nobody wants this");
        File.WriteAllText(store.PartialPath(wanted.Digest), "resumes later");
        File.WriteAllText(Path.Combine(store.MetadataPath, "desired.msgpack.tmp"), "torn");
        await File.WriteAllBytesAsync(store.ImagePath(noManifest.Digest), noManifest.Data);
        await File.WriteAllTextAsync(Path.Combine(store.ImagesPath, "notes.txt"), "stray");
        await store.SaveManifestAsync(corrupt.Digest, corrupt.Manifest.ToBytes(), CancellationToken.None);
        var rotten = corrupt.Data.ToArray();
        rotten[500] ^= 0xFF;
        await File.WriteAllBytesAsync(store.ImagePath(corrupt.Digest), rotten);
        gadget.Attach(0, store.ImagePath(corrupt.Digest), cdrom: false, readOnly: true);

        using var holder = new DesiredStateHolder(store);
        var options = Options.Create(new AgentOptions { Id = "a", Secret = "s", VerifyBeforeAttach = "sampled" });
        var copies = new WorkingCopyStore(store);
        var cache = new ImageCache(store, copies, gadget, holder, options, TimeProvider.System, NullLogger<ImageCache>.Instance);
        await new StartupRecovery(store, copies, gadget, cache, NullLogger<StartupRecovery>.Instance).RunAsync(desired, CancellationToken.None);

        Assert.Equal([Path.GetFileName(store.PartialPath(wanted.Digest))], Directory.GetFiles(store.IncomingPath).Select(Path.GetFileName));
        Assert.Empty(Directory.GetFiles(store.MetadataPath, "*.tmp"));
        Assert.Empty(Directory.GetFiles(store.ImagesPath));
        Assert.Equal(2, Directory.GetFiles(Path.Combine(store.Root, "quarantine")).Length);
        Assert.False(gadget.ReadDrives()[0].HasMedium);
        Assert.Equal("1", File.ReadAllText(Path.Combine(lun, "forced_eject")).Trim());
    }
}
