using System.Security.Cryptography.X509Certificates;
using MsdFleet.Coordinator.Security;

namespace MsdFleet.Coordinator.Tests.Security;

/// <summary>The generated CA survives restarts; the server certificate is renewed when host names change; bad PEM files are named.</summary>
public sealed class TlsCertificatesTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "msdfleet-tls-" + Guid.NewGuid().ToString("N"));

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void SelfSigned_ReloadKeepsTheCa_NewHostNameRenewsOnlyTheServerCertificate()
    {
        var options = new TlsOptions { Mode = "self-signed", Directory = _dir };
        string ca, server;
        using (var first = TlsCertificates.Load(options, TimeProvider.System))
        {
            ca = first.CaSha256!;
            server = first.Server!.Thumbprint;
            Assert.True(first.Server.HasPrivateKey);
            var san = first.Server.Extensions.OfType<X509SubjectAlternativeNameExtension>().Single();
            Assert.Contains("127.0.0.1", san.EnumerateIPAddresses().Select(a => a.ToString()));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(_dir, "server.key")));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(_dir, "ca.key")));
        }
        using (var again = TlsCertificates.Load(options, TimeProvider.System))
        {
            Assert.Equal(ca, again.CaSha256);
            Assert.Equal(server, again.Server!.Thumbprint);
        }
        options.Hostnames = ["fleet.example.net"];
        using var renamed = TlsCertificates.Load(options, TimeProvider.System);
        Assert.Equal(ca, renamed.CaSha256);
        Assert.NotEqual(server, renamed.Server!.Thumbprint);
        Assert.Contains("fleet.example.net", renamed.Server.Extensions.OfType<X509SubjectAlternativeNameExtension>().Single().EnumerateDnsNames());
    }

    [Fact]
    public void Files_WithAKeyThatDoesNotMatch_FailsNamingTheSettings()
    {
        using (TlsCertificates.Load(new TlsOptions { Mode = "self-signed", Directory = _dir }, TimeProvider.System))
        {
        }
        var options = new TlsOptions { Mode = "files", CertificatePath = Path.Combine(_dir, "server.crt"), KeyPath = Path.Combine(_dir, "ca.key") };
        var error = Assert.Throws<InvalidOperationException>(() => TlsCertificates.Load(options, TimeProvider.System));
        Assert.Contains("Tls:CertificatePath", error.Message, StringComparison.Ordinal);
        Assert.Contains("Tls:KeyPath", error.Message, StringComparison.Ordinal);
    }
}
