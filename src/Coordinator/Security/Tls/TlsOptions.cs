using System.ComponentModel.DataAnnotations;

namespace MsdFleet.Coordinator.Security;

/// <summary>
/// Bound from <c>Tls</c>. <c>off</c> (plain HTTP and MQTT — loopback demos only), <c>self-signed</c>
/// (a private CA and server certificate generated once under <see cref="Directory"/>; agents receive the
/// CA at enrollment), or <c>files</c> (a certificate and key from your own CA or ACME, as PEM).
/// When on, Kestrel serves HTTPS on every https:// URL and the embedded broker listens with TLS only.
/// </summary>
public sealed class TlsOptions : IValidatableObject
{
    public const string Section = "Tls";

    [RegularExpression("^(off|self-signed|files)$", ErrorMessage = "Tls:Mode must be off, self-signed or files.")]
    public string Mode { get; set; } = "off";

    /// <summary>PEM certificate (with its chain) for <c>files</c>.</summary>
    public string? CertificatePath { get; set; }

    /// <summary>PEM private key for <c>files</c>.</summary>
    public string? KeyPath { get; set; }

    /// <summary>PEM CA bundle handed to agents at enrollment for <c>files</c> (omit for a publicly trusted certificate).</summary>
    public string? CaPath { get; set; }

    /// <summary>Where <c>self-signed</c> keeps its CA and server certificate.</summary>
    public string Directory { get; set; } = "data/tls";

    /// <summary>Extra DNS names or IP addresses for the generated server certificate (localhost and this host's name are always in).</summary>
    public string[] Hostnames { get; set; } = [];

    public bool Enabled => Mode != "off";

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (Mode == "files")
        {
            if (string.IsNullOrEmpty(CertificatePath) || !File.Exists(CertificatePath))
                yield return new ValidationResult($"Tls:CertificatePath must name an existing PEM file when Tls:Mode is files (got '{CertificatePath}').", [nameof(CertificatePath)]);
            if (string.IsNullOrEmpty(KeyPath) || !File.Exists(KeyPath))
                yield return new ValidationResult($"Tls:KeyPath must name an existing PEM file when Tls:Mode is files (got '{KeyPath}').", [nameof(KeyPath)]);
            if (!string.IsNullOrEmpty(CaPath) && !File.Exists(CaPath))
                yield return new ValidationResult($"Tls:CaPath '{CaPath}' does not exist.", [nameof(CaPath)]);
        }
        foreach (var name in Hostnames)
        {
            if (Uri.CheckHostName(name) == UriHostNameType.Unknown)
                yield return new ValidationResult($"Tls:Hostnames holds '{name}', which is neither a DNS name nor an IP address.", [nameof(Hostnames)]);
        }
    }
}
