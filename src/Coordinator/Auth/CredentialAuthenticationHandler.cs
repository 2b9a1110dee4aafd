using System.Net.Http.Headers;
using System.Security.Claims;
using System.Text;
using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// One scheme for both kinds of caller: <c>Authorization: Bearer &lt;api token&gt;</c> for people and
/// scripts, <c>Authorization: Basic agentId:secret</c> for EdgeAgents. A failure is a 401 ProblemDetails.
/// </summary>
public sealed class CredentialAuthenticationHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options,
    ILoggerFactory logger,
    UrlEncoder encoder,
    TokenStore tokens,
    AgentCredentialStore agents,
    EnrollmentStore enrollments,
    IProblemDetailsService problems)
    : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
{
    public const string SchemeName = "Credentials";

    protected override async Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        if (!AuthenticationHeaderValue.TryParse(Request.Headers.Authorization, out var header) || string.IsNullOrEmpty(header.Parameter))
            return AuthenticateResult.NoResult();
        var ct = Context.RequestAborted;
        if (header.Scheme.Equals("Bearer", StringComparison.OrdinalIgnoreCase) && header.Parameter.StartsWith(EnrollmentStore.TokenPrefix, StringComparison.Ordinal))
        {
            var enrollment = await enrollments.FindAsync(header.Parameter, ct);
            if (enrollment is null)
                return AuthenticateResult.Fail("Unknown, used or expired enrollment token.");
            // A fleet token names no agent: the device says which one it is when it enrolls.
            return enrollment.AgentId is { } agentId
                ? Success(new Claim(ClaimTypes.Name, "enroll:" + agentId), new Claim(ClaimTypes.Role, Roles.Enrollee), new Claim(Roles.AgentIdClaim, agentId))
                : Success(new Claim(ClaimTypes.Name, "enroll:fleet:" + enrollment.Id), new Claim(ClaimTypes.Role, Roles.Enrollee));
        }
        if (header.Scheme.Equals("Bearer", StringComparison.OrdinalIgnoreCase))
        {
            var record = await tokens.FindAsync(header.Parameter, ct);
            if (record is null)
                return AuthenticateResult.Fail("Unknown token.");
            // A personal token acts as its user (audit shows who); a service token under its own name.
            return Success(new Claim(ClaimTypes.Name, record.Owner ?? record.Name), new Claim(ClaimTypes.Role, record.Role));
        }
        if (header.Scheme.Equals("Basic", StringComparison.OrdinalIgnoreCase))
        {
            string decoded;
            try
            {
                decoded = Encoding.UTF8.GetString(Convert.FromBase64String(header.Parameter));
            }
            catch (FormatException)
            {
                return AuthenticateResult.Fail("Malformed Basic credentials.");
            }
            var colon = decoded.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
                return AuthenticateResult.Fail("Malformed Basic credentials.");
            var agentId = decoded[..colon];
            if (!NameRules.TryValidateAgentId(agentId, out _) || !await agents.VerifyAsync(agentId, decoded[(colon + 1)..], ct))
                return AuthenticateResult.Fail("Unknown agent or wrong secret.");
            return Success(new Claim(ClaimTypes.Name, agentId), new Claim(ClaimTypes.Role, Roles.Agent), new Claim(Roles.AgentIdClaim, agentId));
        }
        return AuthenticateResult.Fail("Unsupported authorization scheme.");
    }

    protected override async Task HandleChallengeAsync(AuthenticationProperties properties)
    {
        Response.StatusCode = StatusCodes.Status401Unauthorized;
        Response.Headers.WWWAuthenticate = "Bearer";
        await problems.WriteAsync(new ProblemDetailsContext
        {
            HttpContext = Context,
            ProblemDetails = ApiExceptionHandler.Problem(401, "unauthenticated",
                "This request needs a valid API token (Authorization: Bearer …) or agent credentials."),
        });
    }

    protected override async Task HandleForbiddenAsync(AuthenticationProperties properties)
    {
        Response.StatusCode = StatusCodes.Status403Forbidden;
        await problems.WriteAsync(new ProblemDetailsContext
        {
            HttpContext = Context,
            ProblemDetails = ApiExceptionHandler.Problem(403, "forbidden", "Your credentials do not allow this operation."),
        });
    }

    private static AuthenticateResult Success(params Claim[] claims) =>
        AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(new ClaimsIdentity(claims, SchemeName)), SchemeName));
}
