using System.Text.Json;

namespace MsdFleet.EdgeAgent.Gadget.Kvmd;

/// <summary>
/// The part of kvmd's <c>GET /msd</c> result the driver needs. Shape as built by the otg plugin's
/// <c>Plugin.get_state</c> and <c>_VirtualDrive.get_state</c> (pikvm/kvmd kvmd/plugins/msd/otg/__init__.py):
/// <c>{enabled, online, busy, storage, drive: {image: {name, in_storage, …} | null, connected, cdrom, rw} | null}</c>.
/// The disabled plugin answers <c>enabled: false</c> with <c>drive: null</c>.
/// </summary>
internal sealed record KvmdMsdState(bool Enabled, bool Online, bool Busy, KvmdDrive? Drive)
{
    /// <summary>Reads <c>result</c>; throws <see cref="FormatException"/> when kvmd's answer lacks a field we rely on.</summary>
    public static KvmdMsdState Parse(JsonElement result)
    {
        if (result.ValueKind != JsonValueKind.Object)
            throw new FormatException("result is not an object");
        KvmdDrive? drive = null;
        if (result.TryGetProperty("drive", out var d) && d.ValueKind == JsonValueKind.Object)
        {
            string? image = null;
            var inStorage = false;
            if (d.TryGetProperty("image", out var i) && i.ValueKind == JsonValueKind.Object)
            {
                image = i.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String
                    ? n.GetString()
                    : throw new FormatException("drive.image.name is missing");
                // kvmd ≥ the 2026 MSD rewrite always sends in_storage; older ones only knew images in storage.
                inStorage = !i.TryGetProperty("in_storage", out var s) || s.ValueKind != JsonValueKind.False;
            }
            drive = new KvmdDrive(image, inStorage, Bool(d, "connected"), Bool(d, "cdrom"), Bool(d, "rw"));
        }
        return new KvmdMsdState(Bool(result, "enabled"), Bool(result, "online"), Bool(result, "busy"), drive);
    }

    private static bool Bool(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind is JsonValueKind.True or JsonValueKind.False
            ? value.GetBoolean()
            : throw new FormatException($"'{name}' is missing or not a boolean");
}

/// <summary>
/// kvmd's one drive (mass_storage.usb0, LUN 0): the image selected or attached, whether it is connected
/// to the host, and its flags. While connected kvmd reports what configfs really holds (<c>__get_real_vd</c>).
/// <see cref="ImageName"/> is relative to kvmd's storage when <see cref="InStorage"/>, else only the base
/// name of a file someone attached by hand (kvmd-otgmsd).
/// </summary>
internal sealed record KvmdDrive(string? ImageName, bool InStorage, bool Connected, bool Cdrom, bool Rw)
{
    public override string ToString()
    {
        if (ImageName is null)
            return Connected ? "an unnamed medium" : "no image";
        var where = InStorage ? $"'{ImageName}'" : $"'{ImageName}' from outside its storage";
        return $"{where} ({(Connected ? "connected" : "selected, not connected")}, {(Cdrom ? "cdrom" : "flash")}, {(Rw ? "rw" : "read-only")})";
    }
}
