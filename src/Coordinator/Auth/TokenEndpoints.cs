using MsdFleet.Coordinator.Web;

namespace MsdFleet.Coordinator.Auth;

/// <summary><c>/api/v1/tokens</c>: named, role-scoped, expiring, revocable API tokens (admin only).</summary>
public static class TokenEndpoints
{
    public static WebApplication MapTokenApi(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var tokens = app.MapGroup("/api/v1/tokens").RequireAuthorization(Policies.Admin);
        tokens.MapGet("/", async (TokenStore store, CancellationToken ct) => Results.Ok(await store.ListAsync(ct)));
        tokens.MapPost("/", CreateAsync);
        tokens.MapDelete("/{id}", async (string id, TokenStore store, AuditLog audit, System.Security.Claims.ClaimsPrincipal user, CancellationToken ct) =>
        {
            if (!await store.RevokeAsync(id, ct))
                throw ApiException.NotFound("token-not-found", $"No token with id '{id}'.");
            await audit.RecordAsync(user, "token.revoke", id, null, ct);
            return Results.NoContent();
        });
        app.MapGet("/api/v1/audit", async (int? limit, AuditLog audit, CancellationToken ct) =>
            Results.Ok(await audit.ReadAsync(Math.Clamp(limit ?? 200, 1, 10_000), ct))).RequireAuthorization(Policies.Admin);
        return app;
    }

    private static async Task<IResult> CreateAsync(TokenRequest? request, TokenStore store, AuditLog audit, System.Security.Claims.ClaimsPrincipal user,
        TimeProvider time, CancellationToken ct)
    {
        if (request is null || string.IsNullOrWhiteSpace(request.Name) || request.Name.Length > 100)
            throw ApiException.BadRequest("invalid-token-name", "Give the token a name of 1 to 100 characters.");
        if (request.Role is not (Roles.Viewer or Roles.Operator or Roles.Admin))
            throw ApiException.BadRequest("invalid-role", "role must be \"viewer\", \"operator\" or \"admin\".");
        if (request.ExpiresInDays is < 1 or > 3650)
            throw ApiException.BadRequest("invalid-expiry", "expiresInDays must be between 1 and 3650.");
        var token = SecretHash.NewSecret("msdf_");
        var now = time.GetUtcNow();
        var record = new ApiTokenRecord(request.Name, request.Role, now)
        {
            Id = SecretHash.HashHex(token)[..16],
            ExpiresAt = now.AddDays(request.ExpiresInDays ?? 90),
        };
        await store.AddAsync(token, record, ct);
        await audit.RecordAsync(user, "token.create", record.Id!, $"{record.Name} ({record.Role}) until {record.ExpiresAt:O}", ct);
        return Results.Created($"/api/v1/tokens/{record.Id}", new { record.Id, record.Name, record.Role, record.ExpiresAt, token });
    }
}

public sealed record TokenRequest(string? Name, string? Role, int? ExpiresInDays);
