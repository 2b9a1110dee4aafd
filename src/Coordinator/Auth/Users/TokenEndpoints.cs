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
        app.MapGet("/api/v1/audit", ReadAuditAsync).RequireAuthorization(Policies.Admin);
        return app;
    }

    /// <summary>
    /// <c>GET /api/v1/audit?actor=&amp;action=&amp;target=&amp;since=&amp;until=&amp;limit=&amp;before=</c>: the newest matching entries,
    /// oldest first; when the page is full, a <c>Link: …; rel="next"</c> header names the page of older ones.
    /// </summary>
    private static async Task<IResult> ReadAuditAsync(HttpContext http, AuditLog audit, CancellationToken ct)
    {
        var q = http.Request.Query;
        static string? Text(string? value, string name) => value is null ? null
            : value.Length is > 0 and <= 300 ? value : throw ApiException.BadRequest("invalid-audit-query", $"'{name}' must be 1 to 300 characters.");
        static DateTimeOffset? Time(string? value, string name) => value is null ? null
            : DateTimeOffset.TryParse(value, System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.AssumeUniversal, out var t) ? t
            : throw ApiException.BadRequest("invalid-audit-query", $"'{name}' must be an ISO 8601 time such as 2026-12-01T08:00:00Z, not '{value}'.");
        var limit = q["limit"].ToString() is { Length: > 0 } l
            ? int.TryParse(l, System.Globalization.CultureInfo.InvariantCulture, out var n) && n is >= 1 and <= AuditLog.MaxPage ? n
                : throw ApiException.BadRequest("invalid-audit-query", $"'limit' must be a whole number from 1 to {AuditLog.MaxPage}.")
            : 200;
        long? before = q["before"].ToString() is { Length: > 0 } b
            ? long.TryParse(b, System.Globalization.CultureInfo.InvariantCulture, out var id) && id > 0 ? id
                : throw ApiException.BadRequest("invalid-audit-query", "'before' must be an entry id (a positive whole number) from a previous page.")
            : null;
        var query = new AuditQuery(limit, Text(q["actor"], "actor"), Text(q["action"], "action"), Text(q["target"], "target"),
            Time(q["since"], "since"), Time(q["until"], "until"), before);
        if (query.Since is { } since && query.Until is { } until && until <= since)
            throw ApiException.BadRequest("invalid-audit-query", "'until' must be after 'since'.");
        var page = await audit.ReadAsync(query, ct);
        if (page.Count == limit)
        {
            var next = new Microsoft.AspNetCore.Http.Extensions.QueryBuilder(
                q.Where(kv => kv.Key != "before").SelectMany(kv => kv.Value.Select(v => new KeyValuePair<string, string>(kv.Key, v ?? ""))))
            {
                { "before", page[0].Id.ToString(System.Globalization.CultureInfo.InvariantCulture) },
            };
            http.Response.Headers.Link = $"</api/v1/audit{next}>; rel=\"next\"";
        }
        return Results.Ok(page);
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
