namespace MsdFleet.Protocol.Messages;

/// <summary>How a drive presents its image to the server. Values are wire format: append only.</summary>
public enum DriveMode
{
    None = 0,
    Cdrom = 1,
    Flash = 2,
}
