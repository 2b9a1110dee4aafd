namespace MsdFleet.EdgeAgent.Gadget;

/// <summary>
/// The one port between the agent and whatever presents drives to the server. Drivers report what is
/// really true (read back from the device), and fail with <see cref="GadgetException"/> subclasses.
/// </summary>
public interface IGadgetDriver
{
    /// <summary>State of one LUN, read back from the device; null when the LUN does not exist.</summary>
    LunState? ReadLun(int lun);

    /// <summary>Presents <paramref name="imagePath"/> on <paramref name="lun"/>: ro, then cdrom, then file.</summary>
    void Attach(int lun, string imagePath, bool cdrom, bool readOnly);

    /// <summary>Takes the medium away even while the host holds it (forced_eject).</summary>
    void Eject(int lun);

    /// <summary>Builds and binds the gadget if it does not exist yet; returns false when it already did.</summary>
    bool EnsureGadget();

    /// <summary>The host side as the UDC sees it (e.g. <c>configured</c>, <c>not attached</c>), or null if unknown.</summary>
    string? ReadHostState();
}

public sealed record LunState(int Lun, string? File, bool Cdrom, bool ReadOnly)
{
    public bool HasMedium => !string.IsNullOrEmpty(File);
}

public class GadgetException : Exception
{
    public GadgetException() { }
    public GadgetException(string message) : base(message) { }
    public GadgetException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>The kernel answered EBUSY: the host holds the medium or the LUN is in use.</summary>
public sealed class GadgetBusyException : GadgetException
{
    public GadgetBusyException() { }
    public GadgetBusyException(string message) : base(message) { }
    public GadgetBusyException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>The agent may not write the gadget's attributes (run as root or chown them, as kvmd-otg does).</summary>
public sealed class GadgetPermissionException : GadgetException
{
    public GadgetPermissionException() { }
    public GadgetPermissionException(string message) : base(message) { }
    public GadgetPermissionException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>The gadget, function or LUN folder is not there.</summary>
public sealed class GadgetNotFoundException : GadgetException
{
    public GadgetNotFoundException() { }
    public GadgetNotFoundException(string message) : base(message) { }
    public GadgetNotFoundException(string message, Exception innerException) : base(message, innerException) { }
}
