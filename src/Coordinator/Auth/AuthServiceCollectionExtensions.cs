using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.Cookies;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.DataProtection.KeyManagement;
using Microsoft.Extensions.Options;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;

namespace MsdFleet.Coordinator.Auth;

public static class AuthServiceCollectionExtensions
{
    /// <summary>The scheme every route uses: picks the credentials handler or the session cookie per request.</summary>
    public const string DefaultScheme = "MsdFleet";

    /// <summary>Every route needs an authenticated caller unless it opts out (health probes, login, the public CA).</summary>
    public static WebApplicationBuilder AddAuth(this WebApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.AddOptions<AuthOptions>().BindConfiguration(AuthOptions.Section).ValidateOnStart();
        builder.Services.AddSingleton<TokenStore>();
        builder.Services.AddSingleton<AgentCredentialStore>();
        builder.Services.AddSingleton<SigningKeyStore>();
        builder.Services.AddSingleton<AuditLog>();
        builder.Services.AddSingleton<EnrollmentStore>();
        builder.Services.AddSingleton<UserStore>();
        builder.Services.AddSingleton<LoginThrottle>();
        builder.Services.AddHostedService<BootstrapTokenService>();
        builder.Services.AddHostedService<AuthHousekeeping>();

        builder.Services.AddDataProtection().SetApplicationName("MsdFleet");
        builder.Services.AddSingleton<IConfigureOptions<KeyManagementOptions>>(sp =>
            new ConfigureOptions<KeyManagementOptions>(o => o.XmlRepository = new ObjectStoreXmlRepository(sp.GetRequiredService<IObjectStore>())));
        builder.Services.AddAntiforgery(o =>
        {
            o.HeaderName = SessionEndpoints.CsrfHeader;
            o.Cookie.Name = "msdfleet_csrf";
            o.Cookie.HttpOnly = true;
            o.Cookie.SameSite = SameSiteMode.Strict;
            o.Cookie.SecurePolicy = CookieSecurePolicy.SameAsRequest;
        });

        builder.Services.AddSingleton<SessionTicketStore>();
        builder.Services.AddOptions<CookieAuthenticationOptions>(SessionEndpoints.CookieScheme)
            .Configure<SessionTicketStore>((o, tickets) => o.SessionStore = tickets);
        builder.Services.AddAuthentication(DefaultScheme)
            .AddPolicyScheme(DefaultScheme, "API token, agent credentials or session cookie", o =>
            {
                o.ForwardDefaultSelector = context =>
                    context.Request.Headers.Authorization.Count == 0 && context.Request.Cookies.ContainsKey(SessionEndpoints.CookieName)
                        ? SessionEndpoints.CookieScheme
                        : CredentialAuthenticationHandler.SchemeName;
                // Challenges and refusals are always JSON problems, never a redirect to a login page.
                o.ForwardChallenge = CredentialAuthenticationHandler.SchemeName;
                o.ForwardForbid = CredentialAuthenticationHandler.SchemeName;
            })
            .AddScheme<AuthenticationSchemeOptions, CredentialAuthenticationHandler>(CredentialAuthenticationHandler.SchemeName, null)
            .AddCookie(SessionEndpoints.CookieScheme, o =>
            {
                o.Cookie.Name = SessionEndpoints.CookieName;
                o.Cookie.HttpOnly = true;
                o.Cookie.SameSite = SameSiteMode.Strict;
                o.Cookie.SecurePolicy = CookieSecurePolicy.SameAsRequest;
                o.ExpireTimeSpan = TimeSpan.FromHours(8);
                o.SlidingExpiration = true;
                o.Events.OnValidatePrincipal = async context =>
                {
                    // A deleted user, a changed password or role ends the session at its next request.
                    var users = context.HttpContext.RequestServices.GetRequiredService<UserStore>();
                    var name = context.Principal?.Identity?.Name;
                    var user = name is null ? null : await users.FindAsync(name, context.HttpContext.RequestAborted);
                    if (user is null || user.SecurityStamp != context.Principal!.FindFirst(SessionEndpoints.StampClaim)?.Value)
                    {
                        context.RejectPrincipal();
                        await context.HttpContext.SignOutAsync(SessionEndpoints.CookieScheme);
                    }
                };
            });
        builder.Services.AddAuthorizationBuilder()
            .SetFallbackPolicy(new AuthorizationPolicyBuilder().RequireAuthenticatedUser().Build())
            .AddPolicy(Policies.Read, p => p.RequireRole(Roles.Viewer, Roles.Operator, Roles.Admin))
            .AddPolicy(Policies.Operate, p => p.RequireRole(Roles.Operator, Roles.Admin))
            .AddPolicy(Policies.Admin, p => p.RequireRole(Roles.Admin))
            .AddPolicy(Policies.ImageData, p => p.RequireRole(Roles.Agent, Roles.Operator, Roles.Admin))
            .AddPolicy(Policies.Enroll, p => p.RequireRole(Roles.Enrollee))
            .AddPolicy(Policies.Push, p => p.RequireRole(Roles.Admin, Roles.Agent));

        return builder;
    }
}
