using System.Security.Claims;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.Cookies;
using MsdFleet.Coordinator.Web;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// Browser sessions and user accounts. <c>POST /api/v1/session/login</c> sets an HttpOnly,
/// SameSite=Strict session cookie (Secure over HTTPS) and returns a CSRF token that every unsafe
/// request made with that cookie must echo in <c>X-CSRF-Token</c>. Logins are rate-limited per client
/// address and per user name. Users (<c>/api/v1/users</c>) are admin business.
/// </summary>
public static partial class SessionEndpoints
{
    public const string CookieScheme = CookieAuthenticationDefaults.AuthenticationScheme;
    public const string CookieName = "msdfleet_session";
    public const string CsrfHeader = "X-CSRF-Token";
    public const string StampClaim = "msdfleet:stamp";

    public static WebApplication MapSessionApi(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var session = app.MapGroup("/api/v1/session");
        session.MapPost("/login", LoginAsync).AllowAnonymous();
        session.MapGet("/", (ClaimsPrincipal user, HttpContext context, IAntiforgery antiforgery) => Results.Ok(Describe(user, context, antiforgery)))
            .RequireAuthorization(Policies.Read);
        session.MapPost("/logout", async (HttpContext context) =>
        {
            if (context.User.Identity?.AuthenticationType == CookieScheme)
                await context.SignOutAsync(CookieScheme);
            return Results.NoContent();
        }).RequireAuthorization(Policies.Read);
        session.MapPut("/password", ChangeOwnPasswordAsync).RequireAuthorization(Policies.Read);
        session.MapPost("/token", CreatePersonalTokenAsync).RequireAuthorization(Policies.Read);

        var users = app.MapGroup("/api/v1/users").RequireAuthorization(Policies.Admin);
        users.MapGet("/", async (UserStore store, CancellationToken ct) =>
            Results.Ok((await store.ListAsync(ct)).Select(u => new { u.Name, u.Role, u.CreatedAt })));
        users.MapPost("/", CreateUserAsync);
        users.MapPut("/{name}", UpdateUserAsync);
        users.MapDelete("/{name}", async (string name, UserStore store, TokenStore tokens, AuditLog audit, ClaimsPrincipal user, CancellationToken ct) =>
        {
            if (!await store.DeleteAsync(name, ct))
                throw UnknownUser(name);
            await tokens.RevokeOwnedByAsync(name, ct);
            await audit.RecordAsync(user, "user.delete", name, null, ct);
            return Results.NoContent();
        });
        return app;
    }

    /// <summary>Unsafe requests authenticated by the session cookie must carry the CSRF token (checked before authorization).</summary>
    public static IApplicationBuilder UseCsrfProtection(this IApplicationBuilder app) => app.Use(async (context, next) =>
    {
        if (context.User.Identity?.AuthenticationType == CookieScheme && !HttpMethods.IsGet(context.Request.Method)
            && !HttpMethods.IsHead(context.Request.Method) && !HttpMethods.IsOptions(context.Request.Method))
        {
            var antiforgery = context.RequestServices.GetRequiredService<IAntiforgery>();
            if (!await antiforgery.IsRequestValidAsync(context))
                throw new ApiException(StatusCodes.Status403Forbidden, "csrf-token-invalid",
                    $"Requests made with the session cookie must send the {CsrfHeader} header from the login (or GET /api/v1/session) answer.");
        }
        await next(context);
    });

    private static async Task<IResult> LoginAsync(LoginRequest? request, HttpContext context, UserStore users, LoginThrottle throttle,
        IAntiforgery antiforgery, AuditLog audit, ILoggerFactory loggers, CancellationToken ct)
    {
        // Counted before anything else, on every replica alike: a flood is refused before it costs a password hash.
        if (await throttle.AttemptFromAsync(context.Connection.RemoteIpAddress?.ToString() ?? "unknown", ct) is { } wait)
            throw new ApiException(StatusCodes.Status429TooManyRequests, "too-many-logins",
                $"Too many login attempts from this address; try again in {Math.Ceiling(wait.TotalSeconds)} s.") { RetryAfter = wait };
        if (request?.Username is null || request.Password is null)
            throw ApiException.BadRequest("invalid-login", "Send {\"username\": \"…\", \"password\": \"…\"}.");
        var name = request.Username.Trim().ToLowerInvariant();
        if (await throttle.LockedForAsync(name, ct) is { } retryAfter)
            throw new ApiException(StatusCodes.Status429TooManyRequests, "login-locked",
                $"Too many failed logins for this user; try again in {Math.Ceiling(retryAfter.TotalMinutes)} minute(s).") { RetryAfter = retryAfter };
        var user = await users.VerifyAsync(name, request.Password, ct);
        if (user is null)
        {
            await throttle.FailedAsync(name, ct);
            Log.FailedLogin(loggers.CreateLogger("MsdFleet.Coordinator.Auth.Login"), name, context.Connection.RemoteIpAddress?.ToString() ?? "unknown");
            throw new ApiException(StatusCodes.Status401Unauthorized, "invalid-credentials", "Unknown user or wrong password.");
        }
        await throttle.SucceededAsync(name, ct);
        var principal = new ClaimsPrincipal(new ClaimsIdentity(
        [
            new Claim(ClaimTypes.Name, user.Name),
            new Claim(ClaimTypes.NameIdentifier, user.Name),
            new Claim(ClaimTypes.Role, user.Role),
            new Claim(StampClaim, user.SecurityStamp),
        ], CookieScheme));
        await context.SignInAsync(CookieScheme, principal);
        context.User = principal; // the CSRF token is bound to the user it is issued for
        await audit.RecordAsync(principal, "session.login", user.Name, context.Connection.RemoteIpAddress?.ToString(), ct);
        return Results.Ok(Describe(principal, context, antiforgery));
    }

    private static async Task<IResult> ChangeOwnPasswordAsync(PasswordChange? request, ClaimsPrincipal principal, HttpContext context, UserStore users,
        AuditLog audit, CancellationToken ct)
    {
        if (principal.Identity?.AuthenticationType != CookieScheme || principal.Identity.Name is not { } name)
            throw ApiException.BadRequest("not-a-user", "Only a logged-in user has a password; API tokens do not.");
        if (request?.CurrentPassword is null || await users.VerifyAsync(name, request.CurrentPassword, ct) is not { } user)
            throw ApiException.BadRequest("wrong-password", "currentPassword is not this user's password.");
        if (UserStore.ValidatePassword(name, request.NewPassword) is { } problem)
            throw ApiException.BadRequest("weak-password", problem);
        await users.UpdateAsync(user, request.NewPassword, null, ct);
        await audit.RecordAsync(principal, "user.password", name, "changed own password", ct);
        await context.SignOutAsync(CookieScheme);
        return Results.NoContent();
    }

    /// <summary>
    /// A logged-in user mints an API token for a tool (<c>msdctl login</c>) with that user's own role;
    /// it is revoked with the user.
    /// </summary>
    private static async Task<IResult> CreatePersonalTokenAsync(PersonalTokenRequest? request, ClaimsPrincipal principal, TokenStore tokens,
        AuditLog audit, TimeProvider time, CancellationToken ct)
    {
        if (principal.Identity?.AuthenticationType != CookieScheme || principal.Identity.Name is not { } name)
            throw ApiException.BadRequest("not-a-user", "Log in with a user name and password to mint a personal token.");
        var label = string.IsNullOrWhiteSpace(request?.Name) ? "personal" : request.Name.Trim();
        if (label.Length > 100)
            throw ApiException.BadRequest("invalid-token-name", "Give the token a name of at most 100 characters.");
        if (request?.ExpiresInDays is < 1 or > 365)
            throw ApiException.BadRequest("invalid-expiry", "expiresInDays must be between 1 and 365.");
        var role = principal.FindFirstValue(ClaimTypes.Role)!;
        var token = SecretHash.NewSecret("msdf_");
        var now = time.GetUtcNow();
        var record = new ApiTokenRecord($"{name}: {label}", role, now)
        {
            Id = SecretHash.HashHex(token)[..16],
            ExpiresAt = now.AddDays(request?.ExpiresInDays ?? 90),
            Owner = name,
        };
        await tokens.AddAsync(token, record, ct);
        await audit.RecordAsync(principal, "token.create", record.Id!, $"{record.Name} ({role}) until {record.ExpiresAt:O}", ct);
        return Results.Created($"/api/v1/tokens/{record.Id}", new { record.Id, record.Name, record.Role, record.ExpiresAt, token });
    }

    private static async Task<IResult> CreateUserAsync(UserRequest? request, UserStore users, AuditLog audit, ClaimsPrincipal principal, CancellationToken ct)
    {
        if (UserStore.ValidateName(request?.Name) is { } nameProblem)
            throw ApiException.BadRequest("invalid-user-name", nameProblem);
        ValidateRole(request!.Role);
        if (UserStore.ValidatePassword(request.Name, request.Password) is { } problem)
            throw ApiException.BadRequest("weak-password", problem);
        if (await users.FindAsync(request.Name!, ct) is not null)
            throw ApiException.Conflict("user-exists", $"User '{request.Name}' exists; PUT /api/v1/users/{request.Name} changes it.");
        var user = await users.CreateAsync(request.Name!, request.Password!, request.Role!, ct)
            ?? throw ApiException.Conflict("user-exists", $"User '{request.Name}' exists; PUT /api/v1/users/{request.Name} changes it.");
        await audit.RecordAsync(principal, "user.create", user.Name, user.Role, ct);
        return Results.Created($"/api/v1/users/{user.Name}", new { user.Name, user.Role, user.CreatedAt });
    }

    private static async Task<IResult> UpdateUserAsync(string name, UserRequest? request, UserStore users, TokenStore tokens, AuditLog audit,
        ClaimsPrincipal principal, CancellationToken ct)
    {
        var user = await users.FindAsync(name, ct) ?? throw UnknownUser(name);
        if (request is null || (request.Role is null && request.Password is null))
            throw ApiException.BadRequest("nothing-to-change", "Send a new \"role\" and/or \"password\".");
        if (request.Role is not null)
            ValidateRole(request.Role);
        if (request.Password is not null && UserStore.ValidatePassword(name, request.Password) is { } problem)
            throw ApiException.BadRequest("weak-password", problem);
        user = await users.UpdateAsync(user, request.Password, request.Role, ct);
        await tokens.RevokeOwnedByAsync(name, ct); // personal tokens carry the old role or were minted with the old password
        await audit.RecordAsync(principal, "user.update", name, $"{(request.Role is null ? string.Empty : "role " + request.Role)}{(request.Password is null ? string.Empty : " password reset")}".Trim(), ct);
        return Results.Ok(new { user.Name, user.Role, user.CreatedAt });
    }

    private static void ValidateRole(string? role)
    {
        if (role is not (Roles.Viewer or Roles.Operator or Roles.Admin))
            throw ApiException.BadRequest("invalid-role", "role must be \"viewer\", \"operator\" or \"admin\".");
    }

    private static ApiException UnknownUser(string name) => ApiException.NotFound("user-not-found", $"No user '{name}'.");

    private static object Describe(ClaimsPrincipal user, HttpContext context, IAntiforgery antiforgery) => new
    {
        user = user.Identity?.Name,
        role = user.FindFirstValue(ClaimTypes.Role),
        kind = user.Identity?.AuthenticationType == CookieScheme ? "session" : "token",
        csrfToken = user.Identity?.AuthenticationType == CookieScheme ? antiforgery.GetAndStoreTokens(context).RequestToken : null,
    };

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Failed login for user {User} from {Address}")]
        public static partial void FailedLogin(ILogger logger, string user, string address);
    }
}

public sealed record LoginRequest(string? Username, string? Password);

public sealed record PasswordChange(string? CurrentPassword, string? NewPassword);

public sealed record PersonalTokenRequest(string? Name, int? ExpiresInDays);

public sealed record UserRequest(string? Name, string? Password, string? Role);

/// <summary>
/// Failed logins per user name: after 5 failures within 15 minutes that name is locked for the rest of
/// the window, whoever asks (the per-address limiter cannot see a guesser spread over many addresses).
/// Counted in the state database (<c>login_failures</c>), so the count and the lock hold across replicas.
/// </summary>
public sealed class LoginThrottle(State.StateDatabase db, TimeProvider time)
{
    public const int MaxFailures = 5;
    public static readonly TimeSpan Window = TimeSpan.FromMinutes(15);

    /// <summary>Login attempts allowed per client address per <see cref="AddressWindow"/>, whatever the names.</summary>
    public const int MaxAttemptsPerAddress = 10;
    public static readonly TimeSpan AddressWindow = TimeSpan.FromMinutes(1);

    /// <summary>
    /// Counts an attempt from <paramref name="address"/> and says how long to wait when it is over the limit.
    /// One upsert that returns the new count, so attempts spread over any replicas all count; a window that ran
    /// out starts again at 1.
    /// </summary>
    public async Task<TimeSpan?> AttemptFromAsync(string address, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().ToUnixTimeMilliseconds();
        var window = (long)AddressWindow.TotalMilliseconds;
        var (attempts, firstAtMs) = await db.WriteAsync((c, t) => Dapper.SqlMapper.QuerySingleAsync<(long, long)>(c, new Dapper.CommandDefinition("""
            INSERT INTO login_attempts (address, attempts, first_at_ms) VALUES (@address, 1, @now)
            ON CONFLICT (address) DO UPDATE SET
                attempts = CASE WHEN login_attempts.first_at_ms + @window <= @now THEN 1 ELSE login_attempts.attempts + 1 END,
                first_at_ms = CASE WHEN login_attempts.first_at_ms + @window <= @now THEN @now ELSE login_attempts.first_at_ms END
            RETURNING attempts, first_at_ms
            """, new { address, now, window }, t, cancellationToken: cancellationToken)), cancellationToken);
        return attempts > MaxAttemptsPerAddress ? TimeSpan.FromMilliseconds(Math.Max(1000, firstAtMs + window - now)) : null;
    }

    /// <summary>How long the user stays locked, or null when logins are allowed.</summary>
    public async Task<TimeSpan?> LockedForAsync(string name, CancellationToken cancellationToken)
    {
        var row = await db.ReadAsync(c => Dapper.SqlMapper.QuerySingleOrDefaultAsync<(long Count, long FirstAtMs)?>(c, new Dapper.CommandDefinition(
            "SELECT failures, first_at_ms FROM login_failures WHERE name = @name", new { name }, cancellationToken: cancellationToken)), cancellationToken);
        if (row is not { } r)
            return null;
        var until = DateTimeOffset.FromUnixTimeMilliseconds(r.FirstAtMs) + Window;
        var now = time.GetUtcNow();
        return until > now && r.Count >= MaxFailures ? until - now : null;
    }

    /// <summary>Counts a failure; one upsert, so concurrent failures on any replicas all count. A window that ran out starts again at 1.</summary>
    public Task FailedAsync(string name, CancellationToken cancellationToken) =>
        db.WriteAsync((c, t) => Dapper.SqlMapper.ExecuteAsync(c, new Dapper.CommandDefinition("""
            INSERT INTO login_failures (name, failures, first_at_ms) VALUES (@name, 1, @now)
            ON CONFLICT (name) DO UPDATE SET
                failures = CASE WHEN login_failures.first_at_ms + @window <= @now THEN 1 ELSE login_failures.failures + 1 END,
                first_at_ms = CASE WHEN login_failures.first_at_ms + @window <= @now THEN @now ELSE login_failures.first_at_ms END
            """, new { name, now = time.GetUtcNow().ToUnixTimeMilliseconds(), window = (long)Window.TotalMilliseconds }, t, cancellationToken: cancellationToken)),
            cancellationToken);

    public Task SucceededAsync(string name, CancellationToken cancellationToken) =>
        db.WriteAsync((c, t) => Dapper.SqlMapper.ExecuteAsync(c, new Dapper.CommandDefinition(
            "DELETE FROM login_failures WHERE name = @name", new { name }, t, cancellationToken: cancellationToken)), cancellationToken);

    /// <summary>Forgets windows that ran out (a flood of made-up names or addresses leaves nothing behind); returns how many.</summary>
    public Task<int> PruneAsync(DateTimeOffset now, CancellationToken cancellationToken) =>
        db.WriteAsync(async (c, t) =>
            await Dapper.SqlMapper.ExecuteAsync(c, new Dapper.CommandDefinition(
                "DELETE FROM login_failures WHERE first_at_ms + @window <= @now",
                new { now = now.ToUnixTimeMilliseconds(), window = (long)Window.TotalMilliseconds }, t, cancellationToken: cancellationToken))
            + await Dapper.SqlMapper.ExecuteAsync(c, new Dapper.CommandDefinition(
                "DELETE FROM login_attempts WHERE first_at_ms + @window <= @now",
                new { now = now.ToUnixTimeMilliseconds(), window = (long)AddressWindow.TotalMilliseconds }, t, cancellationToken: cancellationToken)),
            cancellationToken);
}
