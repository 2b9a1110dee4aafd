using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Authentication;
using System.Text.Json;
using System.Text.Json.Nodes;
using MsdFleet.Protocol.Security;

namespace MsdFleet.Cli;

/// <summary>The REST API as msdctl uses it: one HttpClient, errors turned into <see cref="CliException"/>s with exit codes.</summary>
public sealed class CoordinatorClient : IDisposable
{
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public CoordinatorClient(CliConfig config, bool requireToken = true)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (string.IsNullOrEmpty(config.Server))
            throw new CliException(ExitCodes.Usage, "No Coordinator configured: run `msdctl login --server URL …` or set MSDCTL_SERVER.");
        if (!Uri.TryCreate(config.Server.EndsWith('/') ? config.Server : config.Server + "/", UriKind.Absolute, out var server) || server.Scheme is not ("http" or "https"))
            throw new CliException(ExitCodes.Usage, $"'{config.Server}' is not an http(s) URL.");
        if (requireToken && string.IsNullOrEmpty(config.Token))
            throw new CliException(ExitCodes.Unauthorized, "Not logged in: run `msdctl login` or set MSDCTL_TOKEN.");
        TlsTrust trust;
        try
        {
            trust = string.IsNullOrEmpty(config.CaFile) ? TlsTrust.System : TlsTrust.FromPemFile(config.CaFile);
        }
        catch (ArgumentException ex)
        {
            throw new CliException(ExitCodes.Usage, ex.Message);
        }
        Server = server;
        Http = new HttpClient(trust.Apply(new SocketsHttpHandler
        {
            ConnectTimeout = TimeSpan.FromSeconds(15),
            UseCookies = true,
            CookieContainer = new CookieContainer(),
            AllowAutoRedirect = false,
        }))
        {
            BaseAddress = server,
            Timeout = Timeout.InfiniteTimeSpan,
        };
        if (!string.IsNullOrEmpty(config.Token))
            Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", config.Token);
        Http.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("msdctl", typeof(CoordinatorClient).Assembly.GetName().Version?.ToString() ?? "0"));
    }

    public Uri Server { get; }
    public HttpClient Http { get; }

    public async Task<JsonNode?> GetJsonAsync(string path, CancellationToken ct) =>
        await ReadJsonAsync(await SendAsync(new HttpRequestMessage(HttpMethod.Get, path), ct), ct);

    /// <summary>The catalog entry named <paramref name="name"/>; exit code 4 when there is none.</summary>
    public async Task<JsonNode> FindImageAsync(string name, CancellationToken ct) =>
        (await GetJsonAsync("api/v1/images", ct))!.AsArray().FirstOrDefault(i => Output.Str(i!["name"]) == name)
        ?? throw new CliException(ExitCodes.NotFound, $"No image '{name}'.", "image-not-found");

    public async Task<JsonNode?> SendJsonAsync(HttpMethod method, string path, object? body, CancellationToken ct)
    {
        var request = new HttpRequestMessage(method, path);
        if (body is not null)
            request.Content = JsonContent.Create(body, options: Json);
        return await ReadJsonAsync(await SendAsync(request, ct), ct);
    }

    /// <summary>Sends; a non-success answer becomes a <see cref="CliException"/> carrying the server's problem detail.</summary>
    public async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct, HttpCompletionOption completion = HttpCompletionOption.ResponseContentRead)
    {
        ArgumentNullException.ThrowIfNull(request);
        HttpResponseMessage response;
        try
        {
            response = await Http.SendAsync(request, completion, ct);
        }
        catch (HttpRequestException ex) when (ex.InnerException is AuthenticationException)
        {
            throw new CliException(ExitCodes.Unreachable, $"{Server} presented a certificate this machine does not trust ({ex.InnerException.Message}); pass --ca FILE to msdctl login or set MSDCTL_CA.");
        }
        catch (HttpRequestException ex)
        {
            throw new CliException(ExitCodes.Unreachable, $"Cannot reach {Server}: {ex.Message}");
        }
        finally
        {
            request.Dispose();
        }
        if (response.IsSuccessStatusCode)
            return response;
        using (response)
        {
            var text = await response.Content.ReadAsStringAsync(ct);
            string? detail = null, code = null;
            try
            {
                var problem = JsonNode.Parse(text);
                detail = problem?["detail"]?.GetValue<string>() ?? problem?["title"]?.GetValue<string>();
                code = problem?["code"]?.GetValue<string>();
            }
            catch (JsonException)
            {
            }
            var exit = response.StatusCode switch
            {
                HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden => ExitCodes.Unauthorized,
                HttpStatusCode.NotFound => ExitCodes.NotFound,
                HttpStatusCode.Conflict => ExitCodes.Conflict,
                HttpStatusCode.UnprocessableEntity => ExitCodes.VerificationFailed,
                HttpStatusCode.BadRequest => ExitCodes.Usage,
                _ => ExitCodes.Failure,
            };
            throw new CliException(exit, $"{(int)response.StatusCode} {detail ?? response.ReasonPhrase}", code);
        }
    }

    private static async Task<JsonNode?> ReadJsonAsync(HttpResponseMessage response, CancellationToken ct)
    {
        using (response)
        {
            var text = await response.Content.ReadAsStringAsync(ct);
            return string.IsNullOrWhiteSpace(text) ? null : JsonNode.Parse(text);
        }
    }

    public void Dispose() => Http.Dispose();
}
