namespace MsdFleet.Protocol.Messages;

/// <summary>Plain UTF-8 payloads of the retained <c>status</c> topic; <see cref="Offline"/> is the last will.</summary>
public static class AgentStatus
{
    public const string Online = "online";
    public const string Offline = "offline";
}
