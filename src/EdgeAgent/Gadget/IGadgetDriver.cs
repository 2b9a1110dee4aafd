namespace MsdFleet.EdgeAgent.Gadget;

/// <summary>
/// The one port between the agent and whatever presents drives to the server. A drive index maps to a
/// (mass-storage function, LUN) pair the driver discovers or builds; drivers report what is really true
/// (read back from the device) and fail with <see cref="GadgetException"/> subclasses. Asynchronous,
/// because a driver may talk to another process (kvmd) rather than to configfs.
/// </summary>
public interface IGadgetDriver
{
    /// <summary>Every drive the gadget offers, in index order (0, 1, …), each read back from the device.</summary>
    Task<IReadOnlyList<DriveState>> ReadDrivesAsync(CancellationToken cancellationToken);

    /// <summary>Presents <paramref name="imagePath"/> on drive <paramref name="drive"/> (ro, then cdrom, then file).</summary>
    Task AttachAsync(int drive, string imagePath, bool cdrom, bool readOnly, CancellationToken cancellationToken);

    /// <summary>Takes the medium away even while the host holds it (forced_eject).</summary>
    Task EjectAsync(int drive, CancellationToken cancellationToken);

    /// <summary>
    /// Takes the medium away only if the host lets go of it: throws <see cref="GadgetBusyException"/> while
    /// the host holds it (it prevented medium removal, e.g. it has the drive open or mounted). For saving a
    /// drive's writes, where yanking the medium mid-write would save a torn filesystem.
    /// </summary>
    Task EjectGentlyAsync(int drive, CancellationToken cancellationToken);

    /// <summary>Builds and binds the gadget if it does not exist yet; returns false when it already did.</summary>
    Task<bool> EnsureGadgetAsync(CancellationToken cancellationToken);

    /// <summary>The host side as the UDC sees it (e.g. <c>configured</c>, <c>not attached</c>), or null if unknown.</summary>
    Task<string?> ReadHostStateAsync(CancellationToken cancellationToken);
}

/// <summary>
/// One drive as read back: where it lives (<see cref="Function"/>, <see cref="Lun"/>), what is attached,
/// and what it can do. <see cref="CdromCapable"/> and <see cref="WritableCapable"/> are false where the
/// device cannot honour the mode (e.g. a drive whose owner pins it read-only).
/// </summary>
public sealed record DriveState(int Index, string Function, int Lun, string? File, bool Cdrom, bool ReadOnly)
{
    public bool HasMedium => !string.IsNullOrEmpty(File);
    public bool CdromCapable { get; init; } = true;
    public bool WritableCapable { get; init; } = true;
}

public class GadgetException : Exception
{
    public GadgetException() { }
    public GadgetException(string message) : base(message) { }
    public GadgetException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>The device answered "busy": the host holds the medium, the LUN is in use, or (kvmd) another operation runs.</summary>
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

/// <summary>The service that owns the gadget (kvmd) cannot be reached or answered something we cannot use.</summary>
public sealed class GadgetUnavailableException : GadgetException
{
    public GadgetUnavailableException() { }
    public GadgetUnavailableException(string message) : base(message) { }
    public GadgetUnavailableException(string message, Exception innerException) : base(message, innerException) { }
}
