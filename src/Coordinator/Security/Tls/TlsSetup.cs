namespace MsdFleet.Coordinator.Security;

/// <summary>TLS for Kestrel and the embedded broker.</summary>
public static class TlsSetup
{
    public static WebApplicationBuilder AddTls(this WebApplicationBuilder builder)
    {
        // Needed before the host is built (Kestrel's certificate), so validated here, by the same rules.
        var options = builder.Configuration.GetSection(TlsOptions.Section).Get<TlsOptions>() ?? new TlsOptions();
        var results = new List<System.ComponentModel.DataAnnotations.ValidationResult>();
        if (!System.ComponentModel.DataAnnotations.Validator.TryValidateObject(options, new(options), results, validateAllProperties: true))
            throw new Microsoft.Extensions.Options.OptionsValidationException(TlsOptions.Section, typeof(TlsOptions), results.Select(r => r.ErrorMessage ?? "invalid"));
        var certificates = TlsCertificates.Load(options, TimeProvider.System);
        builder.Services.AddSingleton(certificates);
        if (certificates.Server is { } server)
        {
            builder.WebHost.ConfigureKestrel(k => k.ConfigureHttpsDefaults(h =>
            {
                h.ServerCertificate = server;
                h.ServerCertificateChain = certificates.Chain;
                h.SslProtocols = System.Security.Authentication.SslProtocols.Tls12 | System.Security.Authentication.SslProtocols.Tls13;
            }));
        }
        return builder;
    }
}
