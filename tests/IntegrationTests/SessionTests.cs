using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using MsdFleet.Coordinator.Storage;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// People with passwords: slow salted hashes at rest, an HttpOnly SameSite=Strict server-side session
/// cookie, CSRF tokens on unsafe requests, rate-limited logins, and sessions that end on logout,
/// password change or deletion.
/// </summary>
public sealed class SessionTests
{
    private const string AlicePassword = "correct horse battery staple";

    [Fact]
    public async Task BrowserSession_CookieIsStrict_CsrfIsRequired_AndSessionsEnd()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        using (var weak = await coordinator.Http.PostAsJsonAsync("api/v1/users", new { name = "alice", password = "short", role = "operator" }))
            Assert.Equal(HttpStatusCode.BadRequest, weak.StatusCode);
        using (var badName = await coordinator.Http.PostAsJsonAsync("api/v1/users", new { name = "Alice/../x", password = AlicePassword, role = "operator" }))
            Assert.Equal(HttpStatusCode.BadRequest, badName.StatusCode);
        using (var created = await coordinator.Http.PostAsJsonAsync("api/v1/users", new { name = "alice", password = AlicePassword, role = "operator" }))
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        using (var duplicate = await coordinator.Http.PostAsJsonAsync("api/v1/users", new { name = "alice", password = AlicePassword, role = "viewer" }))
            Assert.Equal(HttpStatusCode.Conflict, duplicate.StatusCode);

        // At rest: an Identity v3 PBKDF2 hash (format byte 0x01), never the password.
        var stored = await coordinator.Services.GetRequiredService<MsdFleet.Coordinator.State.StateDatabase>().ReadAsync(
            c => Dapper.SqlMapper.QuerySingleAsync<string>(c, "SELECT record FROM users WHERE name = 'alice'"), default);
        Assert.DoesNotContain(AlicePassword, stored, StringComparison.Ordinal);
        var hash = Convert.FromBase64String(JsonNode.Parse(stored)!["passwordHash"]!.GetValue<string>());
        Assert.Equal(0x01, hash[0]);
        Assert.True(hash.Length >= 1 + 4 + 4 + 4 + 16 + 32, "salt and subkey present");

        using var browser = new BrowserClient(coordinator);
        Assert.Equal(HttpStatusCode.Unauthorized, (await browser.LoginAsync("alice", "wrong password here")).Status);
        Assert.Equal(HttpStatusCode.Unauthorized, (await browser.LoginAsync("nobody", AlicePassword)).Status);
        var (status, body, setCookie) = await browser.LoginAsync("alice", AlicePassword);
        Assert.Equal(HttpStatusCode.OK, status);
        var session = setCookie.Single(c => c.StartsWith("msdfleet_session=", StringComparison.Ordinal)).ToLowerInvariant();
        Assert.Contains("httponly", session, StringComparison.Ordinal);
        Assert.Contains("samesite=strict", session, StringComparison.Ordinal);
        Assert.Equal("operator", body!["role"]!.GetValue<string>());
        var csrf = body["csrfToken"]!.GetValue<string>();

        Assert.Equal(HttpStatusCode.OK, (await browser.SendAsync(HttpMethod.Get, "api/v1/images")).StatusCode);
        await coordinator.CreateAgentSecretAsync("cookie-agent");
        var withoutCsrf = await browser.SendAsync(HttpMethod.Put, "api/v1/agents/cookie-agent/bandwidth", new { maxBytesPerSecond = 1000 });
        Assert.Equal(HttpStatusCode.Forbidden, withoutCsrf.StatusCode);
        Assert.Contains("csrf-token-invalid", await withoutCsrf.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        var forged = await browser.SendAsync(HttpMethod.Put, "api/v1/agents/cookie-agent/bandwidth", new { maxBytesPerSecond = 1000 }, "forged-token");
        Assert.Equal(HttpStatusCode.Forbidden, forged.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await browser.SendAsync(HttpMethod.Put, "api/v1/agents/cookie-agent/bandwidth", new { maxBytesPerSecond = 1000 }, csrf)).StatusCode);
        // An operator's session cannot do admin work, CSRF token or not.
        Assert.Equal(HttpStatusCode.Forbidden, (await browser.SendAsync(HttpMethod.Post, "api/v1/gc", null, csrf)).StatusCode);

        // The session survives a restart (keys and tickets live in the store).
        await coordinator.RestartAsync();
        Assert.Equal(HttpStatusCode.OK, (await browser.SendAsync(HttpMethod.Get, "api/v1/session")).StatusCode);

        // Logout kills the session server-side: the old cookie, replayed, is refused.
        var replay = browser.Cookies;
        Assert.Equal(HttpStatusCode.NoContent, (await browser.SendAsync(HttpMethod.Post, "api/v1/session/logout", null, csrf)).StatusCode);
        browser.Cookies = replay;
        Assert.Equal(HttpStatusCode.Unauthorized, (await browser.SendAsync(HttpMethod.Get, "api/v1/images")).StatusCode);

        // An admin's password reset ends alice's other sessions.
        (status, _, _) = await browser.LoginAsync("alice", AlicePassword);
        Assert.Equal(HttpStatusCode.OK, status);
        using (var reset = await coordinator.Http.PutAsJsonAsync("api/v1/users/alice", new { password = "another long password 42" }))
            Assert.Equal(HttpStatusCode.OK, reset.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await browser.SendAsync(HttpMethod.Get, "api/v1/images")).StatusCode);
        (status, body, _) = await browser.LoginAsync("alice", "another long password 42");
        Assert.Equal(HttpStatusCode.OK, status);
        // A personal token (what msdctl login mints) acts as alice and dies with her.
        using var minted = await browser.SendAsync(HttpMethod.Post, "api/v1/session/token", new { name = "laptop" }, body!["csrfToken"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.Created, minted.StatusCode);
        using var personal = coordinator.NewClient(JsonNode.Parse(await minted.Content.ReadAsStringAsync())!["token"]!.GetValue<string>());
        Assert.Equal("alice", JsonNode.Parse(await personal.GetStringAsync("api/v1/session"))!["user"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.NoContent, (await coordinator.Http.DeleteAsync("api/v1/users/alice")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await browser.SendAsync(HttpMethod.Get, "api/v1/images")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await personal.GetAsync("api/v1/images")).StatusCode);

        var audit = await coordinator.Http.GetStringAsync("api/v1/audit");
        Assert.Contains("session.login", audit, StringComparison.Ordinal);
        Assert.Contains("user.delete", audit, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Logins_AreRateLimited_PerAddressAndPerUser()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        (await coordinator.Http.PostAsJsonAsync("api/v1/users", new { name = "bob", password = AlicePassword, role = "viewer" })).EnsureSuccessStatusCode();
        using var browser = new BrowserClient(coordinator);
        // Five wrong passwords lock the name, so the right password is refused too, with Retry-After.
        for (var i = 0; i < 5; i++)
            Assert.Equal(HttpStatusCode.Unauthorized, (await browser.LoginAsync("bob", $"guess number {i} ...")).Status);
        var locked = await browser.SendRawLoginAsync("bob", AlicePassword);
        Assert.Equal(HttpStatusCode.TooManyRequests, locked.StatusCode);
        Assert.True(locked.Headers.RetryAfter is not null, "Retry-After on a locked user");
        // Ten attempts a minute per address, whatever the names.
        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 6; i++)
            statuses.Add((await browser.LoginAsync($"someone{i}", "not a password at all")).Status);
        Assert.Equal(HttpStatusCode.TooManyRequests, statuses[^1]);
        Assert.Equal(4, statuses.Count(s => s == HttpStatusCode.Unauthorized));
    }

    /// <summary>Behaves like a browser on the UI's origin: keeps cookies by hand so the test can read and replay them.</summary>
    private sealed class BrowserClient(CoordinatorInstance coordinator) : IDisposable
    {
        private readonly HttpClient _http = new(new SocketsHttpHandler { UseCookies = false }) { BaseAddress = coordinator.BaseUrl };

        public Dictionary<string, string> Cookies { get; set; } = new(StringComparer.Ordinal);

        public async Task<(HttpStatusCode Status, JsonObject? Body, IReadOnlyList<string> SetCookie)> LoginAsync(string user, string password)
        {
            using var response = await SendRawLoginAsync(user, password);
            var text = await response.Content.ReadAsStringAsync();
            var setCookie = response.Headers.TryGetValues("Set-Cookie", out var values) ? values.ToList() : [];
            return (response.StatusCode, response.IsSuccessStatusCode ? JsonNode.Parse(text)!.AsObject() : null, setCookie);
        }

        public async Task<HttpResponseMessage> SendRawLoginAsync(string user, string password) =>
            await SendAsync(HttpMethod.Post, "api/v1/session/login", new { username = user, password });

        public async Task<HttpResponseMessage> SendAsync(HttpMethod method, string url, object? body = null, string? csrf = null)
        {
            using var request = new HttpRequestMessage(method, url);
            if (body is not null)
                request.Content = JsonContent.Create(body);
            if (Cookies.Count > 0)
                request.Headers.Add("Cookie", string.Join("; ", Cookies.Select(c => $"{c.Key}={c.Value}")));
            if (csrf is not null)
                request.Headers.Add("X-CSRF-Token", csrf);
            var response = await _http.SendAsync(request);
            if (response.Headers.TryGetValues("Set-Cookie", out var setCookies))
            {
                var updated = new Dictionary<string, string>(Cookies, StringComparer.Ordinal);
                foreach (var header in setCookies)
                {
                    var pair = header.Split(';')[0];
                    var eq = pair.IndexOf('=', StringComparison.Ordinal);
                    var (name, value) = (pair[..eq], pair[(eq + 1)..]);
                    if (value.Length == 0 || header.Contains("expires=Thu, 01 Jan 1970", StringComparison.OrdinalIgnoreCase))
                        updated.Remove(name);
                    else
                        updated[name] = value;
                }
                Cookies = updated;
            }
            return response;
        }

        public void Dispose() => _http.Dispose();
    }
}
