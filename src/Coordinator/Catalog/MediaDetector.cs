using System.Buffers.Binary;
using System.Text;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// Watches an image's bytes as they stream past during ingest and remembers the few regions that
/// identify its media: the MBR and GPT header, the ISO 9660 volume descriptors and the El Torito boot
/// catalog (wherever the boot record says it is). Costs a few KiB of memory, no second read.
/// </summary>
public sealed class MediaProbe
{
    public const int HeadBytes = 64 * 1024;
    private readonly byte[] _head = new byte[HeadBytes];
    private int _headLength;
    private long? _catalogOffset;

    public ReadOnlySpan<byte> Head => _head.AsSpan(0, _headLength);
    public byte[]? BootCatalog { get; private set; }

    public void Observe(long offset, ReadOnlySpan<byte> data)
    {
        if (offset < HeadBytes)
        {
            var take = (int)Math.Min(data.Length, HeadBytes - offset);
            data[..take].CopyTo(_head.AsSpan((int)offset));
            _headLength = Math.Max(_headLength, (int)offset + take);
            if (_headLength == HeadBytes && _catalogOffset is null)
                _catalogOffset = MediaDetector.FindBootCatalogOffset(Head) ?? -1;
        }
        if (_catalogOffset is { } at && at >= 0 && BootCatalog is null && at >= offset && at + 2048 <= offset + data.Length)
            BootCatalog = data.Slice((int)(at - offset), 2048).ToArray();
        else if (_catalogOffset is { } inHead && inHead >= 0 && inHead + 2048 <= _headLength && BootCatalog is null)
            BootCatalog = _head.AsSpan((int)inHead, 2048).ToArray();
    }
}

/// <summary>What the catalog records about an image's media, and how it suggests presenting it.</summary>
public sealed record MediaInfo
{
    /// <summary><c>iso9660</c> or <c>raw</c>.</summary>
    public required string Format { get; init; }
    public string? VolumeLabel { get; init; }
    public bool BootBios { get; init; }
    public bool BootUefi { get; init; }
    /// <summary><c>mbr</c>, <c>gpt</c> or null.</summary>
    public string? PartitionTable { get; init; }
    /// <summary>An ISO that is also a disk image (isohybrid): works as CD-ROM and as flash.</summary>
    public bool Hybrid { get; init; }
    /// <summary><c>cdrom</c> or <c>flash</c>.</summary>
    public required string SuggestedMode { get; init; }
    /// <summary>Larger than an upstream kernel's CD-ROM emulation presents; mount as flash.</summary>
    public bool ExceedsCdromLimit { get; init; }
    public string? Note { get; init; }
}

public sealed class MediaDetector
{
    /// <summary>f_mass_storage caps CD-ROM media below 256*60*75 sectors of 2048 bytes (fsg_lun_open).</summary>
    public const long CdromLimitBytes = (256L * 60 * 75 - 1) * 2048;

    public MediaInfo Classify(MediaProbe probe, long size)
    {
        ArgumentNullException.ThrowIfNull(probe);
        var head = probe.Head;
        var iso = head.Length >= 0x8000 + 2048 && head[0x8000] == 1 && head.Slice(0x8001, 5).SequenceEqual("CD001"u8);
        string? table = null;
        if (head.Length >= 512 + 8 && head.Slice(512, 8).SequenceEqual("EFI PART"u8))
            table = "gpt";
        else if (head.Length >= 512 && head[510] == 0x55 && head[511] == 0xAA && HasMbrPartition(head))
            table = "mbr";
        bool bios = false, uefi = false;
        if (probe.BootCatalog is { } catalog)
            (bios, uefi) = ParseBootCatalog(catalog);
        var label = iso ? Encoding.ASCII.GetString(head.Slice(0x8000 + 40, 32)).TrimEnd(' ', '\0') : null;
        var tooBig = size > CdromLimitBytes;
        var mode = iso && !tooBig ? "cdrom" : "flash";
        string? note = null;
        if (iso && tooBig)
            note = table is null
                ? $"ISO is larger than the {CdromLimitBytes} bytes a stock kernel presents as CD-ROM and has no partition table; it may not boot as flash."
                : $"ISO is larger than the {CdromLimitBytes} bytes a stock kernel presents as CD-ROM; it is hybrid, so mount it as flash.";
        return new MediaInfo
        {
            Format = iso ? "iso9660" : "raw",
            VolumeLabel = string.IsNullOrEmpty(label) ? null : label,
            BootBios = bios,
            BootUefi = uefi,
            PartitionTable = table,
            Hybrid = iso && table is not null,
            SuggestedMode = mode,
            ExceedsCdromLimit = iso && tooBig,
            Note = note,
        };
    }

    /// <summary>Probes an already stored image through a seekable stream (pushed images).</summary>
    public async Task<MediaInfo> ProbeAsync(Stream image, long size, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(image);
        var probe = new MediaProbe();
        var head = new byte[(int)Math.Min(MediaProbe.HeadBytes, size)];
        await image.ReadExactlyAsync(head, cancellationToken);
        probe.Observe(0, head);
        if (FindBootCatalogOffset(head) is { } at && at >= head.Length && at + 2048 <= size)
        {
            var catalog = new byte[2048];
            image.Position = at;
            await image.ReadExactlyAsync(catalog, cancellationToken);
            probe.Observe(at, catalog);
        }
        return Classify(probe, size);
    }

    /// <summary>Byte offset of the El Torito boot catalog named by the boot record, if the image has one.</summary>
    public static long? FindBootCatalogOffset(ReadOnlySpan<byte> head)
    {
        for (var descriptor = 0x8000; descriptor + 2048 <= head.Length; descriptor += 2048)
        {
            var type = head[descriptor];
            if (!head.Slice(descriptor + 1, 5).SequenceEqual("CD001"u8))
                return null;
            if (type == 255)
                return null;
            if (type == 0 && head.Slice(descriptor + 7, 23).SequenceEqual("EL TORITO SPECIFICATION"u8))
                return BinaryPrimitives.ReadUInt32LittleEndian(head[(descriptor + 0x47)..]) * 2048L;
        }
        return null;
    }

    private static (bool Bios, bool Uefi) ParseBootCatalog(byte[] catalog)
    {
        // Validation entry: header 0x01, platform, key 0x55 0xAA at 30..31.
        if (catalog[0] != 0x01 || catalog[30] != 0x55 || catalog[31] != 0xAA)
            return (false, false);
        bool bios = false, uefi = false;
        var platform = catalog[1];
        if (catalog[32] == 0x88)
            Mark(platform);
        for (var at = 64; at + 32 <= catalog.Length;)
        {
            var header = catalog[at];
            if (header is not (0x90 or 0x91))
                break;
            platform = catalog[at + 1];
            int count = BinaryPrimitives.ReadUInt16LittleEndian(catalog.AsSpan(at + 2));
            at += 32;
            for (var i = 0; i < count && at + 32 <= catalog.Length; i++, at += 32)
            {
                if (catalog[at] == 0x88)
                    Mark(platform);
            }
            if (header == 0x91)
                break;
        }
        return (bios, uefi);

        void Mark(byte p)
        {
            if (p == 0x00)
                bios = true;
            else if (p == 0xEF)
                uefi = true;
        }
    }

    private static bool HasMbrPartition(ReadOnlySpan<byte> head)
    {
        for (var i = 0; i < 4; i++)
        {
            var entry = head.Slice(446 + i * 16, 16);
            if (entry[4] != 0 && entry[0] is 0x00 or 0x80)
                return true;
        }
        return false;
    }
}
