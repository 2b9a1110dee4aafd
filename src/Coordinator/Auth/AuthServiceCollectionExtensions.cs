using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authorization;

namespace MsdFleet.Coordinator.Auth;

public static class AuthServiceCollectionExtensions
{
    /// <summary>Every route needs an authenticated caller unless it opts out (health probes only).</summary>
    public static WebApplicationBuilder AddAuth(this WebApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.AddOptions<AuthOptions>().BindConfiguration(AuthOptions.Section).ValidateOnStart();
        builder.Services.AddSingleton<TokenStore>();
        builder.Services.AddSingleton<AgentCredentialStore>();
        builder.Services.AddSingleton<SigningKeyStore>();
        builder.Services.AddSingleton<AuditLog>();
        builder.Services.AddSingleton<EnrollmentStore>();
        builder.Services.AddHostedService<BootstrapTokenService>();
        builder.Services.AddAuthentication(CredentialAuthenticationHandler.SchemeName)
            .AddScheme<AuthenticationSchemeOptions, CredentialAuthenticationHandler>(CredentialAuthenticationHandler.SchemeName, null);
        builder.Services.AddAuthorizationBuilder()
            .SetFallbackPolicy(new AuthorizationPolicyBuilder().RequireAuthenticatedUser().Build())
            .AddPolicy(Policies.Read, p => p.RequireRole(Roles.Viewer, Roles.Operator, Roles.Admin))
            .AddPolicy(Policies.Operate, p => p.RequireRole(Roles.Operator, Roles.Admin))
            .AddPolicy(Policies.Admin, p => p.RequireRole(Roles.Admin))
            .AddPolicy(Policies.ImageData, p => p.RequireRole(Roles.Agent, Roles.Operator, Roles.Admin))
            .AddPolicy(Policies.Enroll, p => p.RequireRole(Roles.Enrollee));
        return builder;
    }
}
