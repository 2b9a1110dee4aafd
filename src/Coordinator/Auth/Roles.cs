namespace MsdFleet.Coordinator.Auth;

/// <summary>Role names in claims, and the authorization policies built from them.</summary>
public static class Roles
{
    public const string Viewer = "viewer";
    public const string Operator = "operator";
    public const string Admin = "admin";
    /// <summary>An EdgeAgent's own credentials: may read image bytes it is asked to present, nothing else.</summary>
    public const string Agent = "agent";

    /// <summary>The bearer of a one-time enrollment token: may exchange it for its agent's credentials, nothing else.</summary>
    public const string Enrollee = "enrollee";

    public const string AgentIdClaim = "msdfleet:agent";
}

public static class Policies
{
    public const string Read = "read";
    public const string Operate = "operate";
    public const string Admin = "admin";
    public const string ImageData = "image-data";
    public const string Enroll = "enroll";
    /// <summary>The push protocol: admins, and agents saving a snapshot they were asked for (checked by the endpoints).</summary>
    public const string Push = "push";
}
