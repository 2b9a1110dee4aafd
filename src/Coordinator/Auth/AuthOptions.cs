namespace MsdFleet.Coordinator.Auth;

/// <summary>Bound from <c>Auth</c>.</summary>
public sealed class AuthOptions
{
    public const string Section = "Auth";

    /// <summary>
    /// An admin token supplied by the operator (e.g. from a Kubernetes secret). When set and no token
    /// exists yet, it becomes the bootstrap admin token; otherwise one is generated and shown once.
    /// </summary>
    public string? BootstrapAdminToken { get; set; }

    /// <summary>
    /// The URL agents and people reach the Coordinator by (e.g. https://fleet.example.net/), handed out at
    /// enrollment; by default the scheme and host of the enrollment request itself.
    /// </summary>
    public Uri? PublicUrl { get; set; }

    /// <summary>
    /// When set and no user exists yet, creates the user <c>admin</c> with this password for the first
    /// browser login (change it afterwards). Never logged.
    /// </summary>
    public string? BootstrapAdminPassword { get; set; }

    /// <summary>Optional file that receives a generated bootstrap token (mode 0600), for scripts.</summary>
    public string? BootstrapTokenFile { get; set; }
}
