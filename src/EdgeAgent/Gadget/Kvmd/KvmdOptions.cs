using System.ComponentModel.DataAnnotations;

namespace MsdFleet.EdgeAgent.Gadget.Kvmd;

/// <summary>
/// Bound from <c>Gadget:Kvmd</c> when <c>Gadget:Driver=kvmd</c>: how to reach a stock PiKVM's kvmd and
/// where its MSD storage is. The unix socket is the default and needs no nginx; <see cref="Url"/> goes
/// through nginx instead (and then every path gets kvmd's <c>/api</c> prefix).
/// </summary>
public sealed class KvmdOptions : IValidatableObject
{
    public const string Section = "Gadget:Kvmd";

    /// <summary>kvmd's own socket (<c>kvmd.server.unix</c>); used unless <see cref="Url"/> is set.</summary>
    public string SocketPath { get; set; } = "/run/kvmd/kvmd.sock";

    /// <summary>kvmd behind nginx, e.g. <c>https://127.0.0.1/</c>; when set it is used instead of <see cref="SocketPath"/>.</summary>
    public Uri? Url { get; set; }

    /// <summary>
    /// The certificate nginx presents for <see cref="Url"/> (PiKVM generates a self-signed one at
    /// <c>/etc/kvmd/nginx/ssl/server.crt</c>); when set, exactly that certificate is trusted, else the system's roots.
    /// </summary>
    public string? CertificatePath { get; set; }

    /// <summary>
    /// Sent as <c>X-KVMD-User</c>/<c>X-KVMD-Passwd</c>. May stay empty on the unix socket when the agent's
    /// unix user is listed in kvmd's <c>auth.usc.users</c> (kvmd then trusts the socket's peer credentials).
    /// </summary>
    public string? User { get; set; }

    /// <summary>The password of <see cref="User"/> (a user without TOTP: kvmd expects the code appended to it).</summary>
    public string? Password { get; set; }

    /// <summary>Each request to kvmd, body included, must finish within this time.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// kvmd's MSD storage (the PIMSD mount in /etc/fstab). Images must lie under it: mount or bind-mount the
    /// agent's store inside, e.g. at <c>/var/lib/kvmd/msd/msdfleet</c>.
    /// </summary>
    [Required(ErrorMessage = "Gadget:Kvmd:StorageRoot is required (kvmd's MSD storage, e.g. /var/lib/kvmd/msd).")]
    public string StorageRoot { get; set; } = "/var/lib/kvmd/msd";

    /// <summary>The function kvmd drives (its main MSD is always <c>mass_storage.usb0</c>, LUN 0).</summary>
    [Required(ErrorMessage = "Gadget:Kvmd:FunctionName is required (kvmd's main MSD is mass_storage.usb0).")]
    [RegularExpression(@"^mass_storage\.[A-Za-z0-9_]+$", ErrorMessage = "Gadget:Kvmd:FunctionName must look like mass_storage.usb0.")]
    public string FunctionName { get; set; } = "mass_storage.usb0";

    /// <summary>
    /// kvmd learns about new files through inotify, so an image placed a moment ago may be unknown to it
    /// yet: MsdUnknownImageError is retried this many times, waiting <see cref="UnknownImageRetryDelay"/>,
    /// doubling each time.
    /// </summary>
    [Range(0, 10, ErrorMessage = "Gadget:Kvmd:UnknownImageRetries must be 0..10.")]
    public int UnknownImageRetries { get; set; } = 4;

    public TimeSpan UnknownImageRetryDelay { get; set; } = TimeSpan.FromMilliseconds(250);

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (Url is { } url)
        {
            if (!url.IsAbsoluteUri || url.Scheme is not ("http" or "https"))
                yield return new ValidationResult($"Gadget:Kvmd:Url must be an absolute http(s) URL such as https://127.0.0.1/, not '{url}'.", [nameof(Url)]);
        }
        else if (string.IsNullOrWhiteSpace(SocketPath) || !Path.IsPathFullyQualified(SocketPath))
        {
            yield return new ValidationResult($"Gadget:Kvmd:SocketPath must be an absolute path such as /run/kvmd/kvmd.sock (or set Gadget:Kvmd:Url), not '{SocketPath}'.", [nameof(SocketPath)]);
        }
        if (!string.IsNullOrEmpty(CertificatePath))
        {
            if (Url is not { Scheme: "https" })
                yield return new ValidationResult("Gadget:Kvmd:CertificatePath only applies to an https Gadget:Kvmd:Url.", [nameof(CertificatePath)]);
            else if (!File.Exists(CertificatePath))
                yield return new ValidationResult($"Gadget:Kvmd:CertificatePath '{CertificatePath}' does not exist.", [nameof(CertificatePath)]);
        }
        if (string.IsNullOrEmpty(User) && !string.IsNullOrEmpty(Password))
            yield return new ValidationResult("Gadget:Kvmd:Password is set but Gadget:Kvmd:User is not: kvmd only reads the password together with the user.", [nameof(User)]);
        if (!string.IsNullOrEmpty(StorageRoot) && !Path.IsPathFullyQualified(StorageRoot))
            yield return new ValidationResult($"Gadget:Kvmd:StorageRoot must be an absolute path, not '{StorageRoot}'.", [nameof(StorageRoot)]);
        if (RequestTimeout < TimeSpan.FromMilliseconds(100) || RequestTimeout > TimeSpan.FromMinutes(5))
            yield return new ValidationResult("Gadget:Kvmd:RequestTimeout must be between 100 ms and 5 minutes.", [nameof(RequestTimeout)]);
        if (UnknownImageRetryDelay < TimeSpan.Zero || UnknownImageRetryDelay > TimeSpan.FromSeconds(10))
            yield return new ValidationResult("Gadget:Kvmd:UnknownImageRetryDelay must be between 0 and 10 seconds.", [nameof(UnknownImageRetryDelay)]);
    }
}
