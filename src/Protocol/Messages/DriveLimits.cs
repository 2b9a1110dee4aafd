namespace MsdFleet.Protocol.Messages;

/// <summary>
/// The one definition of how many drives an agent may be asked to present. The Coordinator validates
/// drive indexes against it, the agent builds and discovers at most this many. Eight covers PiKVM's
/// main drive plus its extra drives, and stays inside the endpoint budget of a Pi's OTG controller
/// when each drive is a function of its own.
/// </summary>
public static class DriveLimits
{
    public const int MaxDrives = 8;
}
