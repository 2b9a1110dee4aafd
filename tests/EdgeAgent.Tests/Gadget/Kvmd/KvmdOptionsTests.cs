using System.ComponentModel.DataAnnotations;
using MsdFleet.EdgeAgent.Gadget.Kvmd;

namespace MsdFleet.EdgeAgent.Tests.Gadget.Kvmd;

public class KvmdOptionsTests
{
    private static List<ValidationResult> Validate(KvmdOptions options)
    {
        var results = new List<ValidationResult>();
        Validator.TryValidateObject(options, new ValidationContext(options), results, validateAllProperties: true);
        return results;
    }

    [Fact]
    public void Validate_Defaults_AreValid() => Assert.Empty(Validate(new KvmdOptions()));

    [Fact]
    public void Validate_UrlWithPinnedCertificate_IsValid()
    {
        using var dir = new TempDirectory();
        var certificate = Path.Combine(dir.Path, "server.crt");
        File.WriteAllText(certificate, "pem");

        Assert.Empty(Validate(new KvmdOptions { Url = new Uri("https://127.0.0.1/"), CertificatePath = certificate, User = "admin", Password = "x" }));
    }

    [Theory]
    [InlineData("Url", "Gadget:Kvmd:Url")]
    [InlineData("SocketPath", "Gadget:Kvmd:SocketPath")]
    [InlineData("CertificatePath", "Gadget:Kvmd:CertificatePath")]
    [InlineData("Password", "Gadget:Kvmd:Password")]
    [InlineData("StorageRoot", "Gadget:Kvmd:StorageRoot")]
    [InlineData("FunctionName", "Gadget:Kvmd:FunctionName")]
    [InlineData("RequestTimeout", "Gadget:Kvmd:RequestTimeout")]
    [InlineData("UnknownImageRetries", "Gadget:Kvmd:UnknownImageRetries")]
    public void Validate_BadSetting_NamesIt(string setting, string named)
    {
        var options = new KvmdOptions();
        switch (setting)
        {
            case "Url": options.Url = new Uri("ftp://127.0.0.1/"); break;
            case "SocketPath": options.SocketPath = "kvmd.sock"; break;
            case "CertificatePath": options.CertificatePath = "/etc/kvmd/nginx/ssl/server.crt"; break; // on the socket, no https
            case "Password": options.Password = "secret"; break;
            case "StorageRoot": options.StorageRoot = "msd"; break;
            case "FunctionName": options.FunctionName = "usb0"; break;
            case "RequestTimeout": options.RequestTimeout = TimeSpan.Zero; break;
            case "UnknownImageRetries": options.UnknownImageRetries = 50; break;
        }

        var error = Assert.Single(Validate(options));

        Assert.Contains(named, error.ErrorMessage, StringComparison.Ordinal);
    }
}
