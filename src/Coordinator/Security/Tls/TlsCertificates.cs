using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using MsdFleet.Protocol.IO;
using MsdFleet.Protocol.Security;

namespace MsdFleet.Coordinator.Security;

/// <summary>
/// The server certificate Kestrel and the embedded broker present, and the CA that agents are told to
/// trust. For <c>self-signed</c> a P-256 CA (10 years) and a server certificate (1 year, renewed on
/// start when under 30 days remain or when the host names change) are generated once and kept as PEM
/// files, private keys with mode 0600.
/// </summary>
public sealed class TlsCertificates : IDisposable
{
    private TlsCertificates(X509Certificate2? server, X509Certificate2Collection chain, string? caPem)
    {
        Server = server;
        Chain = chain;
        CaPem = caPem;
    }

    public static TlsCertificates Off { get; } = new(null, [], null);

    /// <summary>The certificate with its private key; null when TLS is off.</summary>
    public X509Certificate2? Server { get; }

    /// <summary>Intermediates (and the private root) sent with the server certificate.</summary>
    public X509Certificate2Collection Chain { get; }

    /// <summary>The CA bundle agents must trust (null: the server certificate is publicly trusted).</summary>
    public string? CaPem { get; }

    public string? CaSha256 => CaPem is null ? null : TlsTrust.Sha256OfPem(CaPem);

    public bool Enabled => Server is not null;

    public static TlsCertificates Load(TlsOptions options, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        return options.Mode switch
        {
            "files" => LoadFiles(options),
            "self-signed" => LoadOrCreateSelfSigned(options, time),
            _ => Off,
        };
    }

    private static TlsCertificates LoadFiles(TlsOptions options)
    {
        X509Certificate2 server;
        var chain = new X509Certificate2Collection();
        try
        {
            using var pemOnly = X509Certificate2.CreateFromPemFile(options.CertificatePath!, options.KeyPath);
            server = Persist(pemOnly);
            chain.ImportFromPemFile(options.CertificatePath!);
        }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException)
        {
            throw new InvalidOperationException(
                $"Tls:CertificatePath '{options.CertificatePath}' and Tls:KeyPath '{options.KeyPath}' do not hold a PEM certificate and its private key: {ex.Message}", ex);
        }
        if (server.NotAfter < DateTime.Now)
            throw new InvalidOperationException($"The certificate in Tls:CertificatePath expired on {server.NotAfter:u}.");
        var intermediates = new X509Certificate2Collection();
        foreach (var c in chain)
        {
            if (c.Thumbprint != server.Thumbprint)
                intermediates.Add(c);
        }
        var caPem = string.IsNullOrEmpty(options.CaPath) ? null : File.ReadAllText(options.CaPath);
        if (caPem is not null)
        {
            try
            {
                _ = TlsTrust.Sha256OfPem(caPem);
            }
            catch (CryptographicException ex)
            {
                throw new InvalidOperationException($"Tls:CaPath '{options.CaPath}' is not a PEM certificate: {ex.Message}", ex);
            }
        }
        return new TlsCertificates(server, intermediates, caPem);
    }

    private static TlsCertificates LoadOrCreateSelfSigned(TlsOptions options, TimeProvider time)
    {
        Directory.CreateDirectory(options.Directory);
        var caCrt = Path.Combine(options.Directory, "ca.crt");
        var caKey = Path.Combine(options.Directory, "ca.key");
        var serverCrt = Path.Combine(options.Directory, "server.crt");
        var serverKey = Path.Combine(options.Directory, "server.key");
        var now = time.GetUtcNow();
        var names = HostNames(options);

        if (!File.Exists(caCrt) || !File.Exists(caKey))
        {
            using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var request = new CertificateRequest($"CN=MsdFleet CA {Environment.MachineName}, O=MsdFleet", key, HashAlgorithmName.SHA256);
            request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
            request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
            request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
            using var ca = request.CreateSelfSigned(now.AddMinutes(-5), now.AddYears(10));
            WriteSecret(caKey, key.ExportPkcs8PrivateKeyPem());
            WritePublic(caCrt, ca.ExportCertificatePem());
        }
        using var caCert = X509Certificate2.CreateFromPemFile(caCrt, caKey);

        if (!ServerIsCurrent(serverCrt, serverKey, caCert, names, now))
        {
            using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var request = new CertificateRequest($"CN={names[0]}", key, HashAlgorithmName.SHA256);
            var san = new SubjectAlternativeNameBuilder();
            foreach (var name in names)
            {
                if (IPAddress.TryParse(name, out var ip))
                    san.AddIpAddress(ip);
                else
                    san.AddDnsName(name);
            }
            request.CertificateExtensions.Add(san.Build());
            request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
            request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
            request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
            request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
            request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(caCert, true, false));
            var serial = RandomNumberGenerator.GetBytes(16);
            serial[0] &= 0x7f;
            using var issued = request.Create(caCert, now.AddMinutes(-5), now.AddYears(1), serial);
            WriteSecret(serverKey, key.ExportPkcs8PrivateKeyPem());
            WritePublic(serverCrt, issued.ExportCertificatePem());
            WritePublic(serverCrt + ".names", string.Join('\n', names));
        }
        using var pemServer = X509Certificate2.CreateFromPemFile(serverCrt, serverKey);
        var caPem = File.ReadAllText(caCrt);
        var publicCa = X509Certificate2.CreateFromPem(caPem);
        return new TlsCertificates(Persist(pemServer), [publicCa], caPem);
    }

    private static bool ServerIsCurrent(string crt, string key, X509Certificate2 ca, string[] names, DateTimeOffset now)
    {
        if (!File.Exists(crt) || !File.Exists(key) || !File.Exists(crt + ".names"))
            return false;
        if (File.ReadAllText(crt + ".names") != string.Join('\n', names))
            return false;
        using var existing = X509Certificate2.CreateFromPem(File.ReadAllText(crt));
        return existing.NotAfter > now.AddDays(30).UtcDateTime && existing.Issuer == ca.Subject;
    }

    private static string[] HostNames(TlsOptions options)
    {
        var names = new List<string> { "localhost", "127.0.0.1", "::1" };
        var host = Dns.GetHostName();
        if (Uri.CheckHostName(host) == UriHostNameType.Dns)
            names.Add(host);
        names.AddRange(options.Hostnames);
        return names.Distinct(StringComparer.OrdinalIgnoreCase).ToArray();
    }

    // An ephemeral PEM key cannot serve TLS on every platform; a PKCS#12 round trip gives a usable one.
    private static X509Certificate2 Persist(X509Certificate2 pem) =>
        X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);

    private static void WriteSecret(string path, string pem) =>
        AtomicFile.Write(path, Encoding.ASCII.GetBytes(pem), UnixFileMode.UserRead | UnixFileMode.UserWrite);

    private static void WritePublic(string path, string text) => AtomicFile.Write(path, Encoding.UTF8.GetBytes(text), null);

    public void Dispose()
    {
        Server?.Dispose();
        foreach (var c in Chain)
            c.Dispose();
    }
}
