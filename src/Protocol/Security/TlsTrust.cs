using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace MsdFleet.Protocol.Security;

/// <summary>
/// How agents, msdctl and the Coordinator decide whether to trust a TLS server: by the system's roots,
/// or — for a private CA such as the Coordinator's generated one — only by a CA bundle given in
/// configuration or received at enrollment. The host name must match in every case.
/// </summary>
public sealed class TlsTrust
{
    private readonly X509Certificate2Collection? _roots;

    private TlsTrust(X509Certificate2Collection? roots) => _roots = roots;

    /// <summary>The operating system's roots.</summary>
    public static TlsTrust System { get; } = new(null);

    /// <summary>Only the CA certificates in a PEM bundle.</summary>
    public static TlsTrust FromPem(string pem)
    {
        var roots = new X509Certificate2Collection();
        roots.ImportFromPem(pem);
        if (roots.Count == 0)
            throw new ArgumentException("The CA bundle holds no PEM certificate.", nameof(pem));
        return new TlsTrust(roots);
    }

    public static TlsTrust FromPemFile(string path)
    {
        string pem;
        try
        {
            pem = File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"Cannot read the CA bundle '{path}': {ex.Message}", nameof(path), ex);
        }
        return FromPem(pem);
    }

    /// <summary>Normalizes a CA fingerprint (64 hex digits, optionally <c>sha256:</c>-prefixed, colons allowed).</summary>
    public static string NormalizeFingerprint(string hex)
    {
        ArgumentNullException.ThrowIfNull(hex);
        var digits = hex.StartsWith("sha256:", StringComparison.OrdinalIgnoreCase) ? hex[7..] : hex;
        digits = digits.Replace(":", string.Empty, StringComparison.Ordinal);
        if (digits.Length != 64 || !digits.All(Uri.IsHexDigit))
            throw new ArgumentException($"A CA fingerprint is sha256: and 64 hex digits, not '{hex}'.", nameof(hex));
        return "sha256:" + digits.ToLowerInvariant();
    }

    public bool IsSystem => _roots is null;

    public static string Sha256Of(X509Certificate2 certificate)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        return "sha256:" + Convert.ToHexStringLower(SHA256.HashData(certificate.RawData));
    }

    /// <summary>The fingerprint of the first certificate in a PEM text.</summary>
    public static string Sha256OfPem(string pem)
    {
        using var certificate = X509Certificate2.CreateFromPem(pem);
        return Sha256Of(certificate);
    }

    /// <summary>A RemoteCertificateValidationCallback body.</summary>
    public bool Validate(X509Certificate? certificate, X509Chain? presentedChain, SslPolicyErrors errors)
    {
        if (certificate is null || (errors & SslPolicyErrors.RemoteCertificateNotAvailable) != 0)
            return false;
        if (IsSystem)
            return errors == SslPolicyErrors.None;
        if ((errors & SslPolicyErrors.RemoteCertificateNameMismatch) != 0)
            return false;
        using var leaf = new X509Certificate2(certificate);
        using var chain = new X509Chain();
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationFlags = X509VerificationFlags.NoFlag;
        if (presentedChain is not null)
        {
            foreach (var element in presentedChain.ChainElements)
                chain.ChainPolicy.ExtraStore.Add(element.Certificate);
        }
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(_roots!);
        return chain.Build(leaf);
    }

    /// <summary>An HTTP handler that trusts what this instance trusts.</summary>
    public SocketsHttpHandler Apply(SocketsHttpHandler handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        if (!IsSystem)
            handler.SslOptions.RemoteCertificateValidationCallback = (_, cert, chain, errors) => Validate(cert, chain, errors);
        return handler;
    }
}
