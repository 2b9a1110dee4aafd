using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace MsdFleet.FleetBench;

/// <summary>
/// The few Coordinator calls the benchmark makes, as an admin (bootstrap token). A refused call throws with the
/// status and the ProblemDetails body, so the script prints why instead of a bare HTTP error.
/// </summary>
public sealed class CoordinatorApi : IDisposable
{
    private readonly HttpClient _http;
    private readonly Uri _baseUrl;

    public CoordinatorApi(Uri baseUrl, string adminToken)
    {
        _baseUrl = baseUrl;
        _http = new HttpClient { BaseAddress = baseUrl, Timeout = TimeSpan.FromMinutes(10) };
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", adminToken);
    }

    public Uri BaseUrl => _baseUrl;

    private static async Task<JsonNode> ReadAsync(HttpResponseMessage response, string what, CancellationToken ct)
    {
        var text = await response.Content.ReadAsStringAsync(ct);
        if (!response.IsSuccessStatusCode)
            throw new BenchException($"{what}: HTTP {(int)response.StatusCode} {text}");
        return JsonNode.Parse(text) ?? throw new BenchException($"{what}: empty answer");
    }

    public async Task<JsonNode> GetAsync(string path, CancellationToken ct)
    {
        using var response = await _http.GetAsync(path, ct);
        return await ReadAsync(response, "GET " + path, ct);
    }

    public async Task<string> GetTextAsync(string path, CancellationToken ct)
    {
        using var response = await _http.GetAsync(path, ct);
        var text = await response.Content.ReadAsStringAsync(ct);
        return response.IsSuccessStatusCode ? text : throw new BenchException($"GET {path}: HTTP {(int)response.StatusCode} {text}");
    }

    public async Task<JsonNode> PostAsync(string path, object body, CancellationToken ct)
    {
        using var response = await _http.PostAsJsonAsync(path, body, ct);
        return await ReadAsync(response, "POST " + path, ct);
    }

    /// <summary>Uploads <paramref name="bytes"/> as image <paramref name="name"/>; its digest.</summary>
    public async Task<string> UploadImageAsync(string name, byte[] bytes, CancellationToken ct)
    {
        using var content = new ByteArrayContent(bytes);
        using var response = await _http.PutAsync($"api/v1/images/{name}", content, ct);
        return (await ReadAsync(response, $"PUT image {name}", ct))["digest"]!.GetValue<string>();
    }

    /// <summary>One device enrolling with a fleet token (what <c>msdfleet-agent enroll --id ID</c> sends); its secret.</summary>
    public async Task<string> EnrollAsync(string fleetToken, string agentId, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "api/v1/enroll") { Content = JsonContent.Create(new { agentId }) };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", fleetToken);
        using var response = await _http.SendAsync(request, ct);
        return (await ReadAsync(response, $"enroll {agentId}", ct))["secret"]!.GetValue<string>();
    }

    /// <summary>How many agents the Coordinator counts online.</summary>
    public async Task<long> OnlineAsync(CancellationToken ct) =>
        (await GetAsync("api/v1/fleet/summary", ct))["counts"]!["online"]!.GetValue<long>();

    public void Dispose() => _http.Dispose();
}

/// <summary>The benchmark cannot go on: the message says why; no stack trace.</summary>
public sealed class BenchException(string message) : Exception(message);
