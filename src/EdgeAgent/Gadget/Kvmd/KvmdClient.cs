using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;

namespace MsdFleet.EdgeAgent.Gadget.Kvmd;

/// <summary>
/// The wire to kvmd's HTTP API: one request with its own timeout, kvmd's envelope unwrapped, and every
/// failure turned into the <see cref="GadgetException"/> a caller can act on. Paths are given as kvmd's
/// router knows them (<c>/msd</c>); behind nginx they get the <c>/api</c> prefix nginx strips again.
/// </summary>
/// <remarks>
/// Checked against pikvm/kvmd f14596e8: <c>kvmd/htserver.py</c> (<c>make_json_response</c>,
/// <c>make_json_exception</c>, <c>HttpServer.__add_exposed_http</c>: IsBusyError → 409, ValidatorError and
/// OperationError → 400 with <c>{"ok": false, "result": {"error", "error_msg"}}</c>, HttpError → its status,
/// anything else aiohttp's plain 500) and <c>kvmd/apps/kvmd/api/auth.py</c> (<c>_check_xhdr</c>: a wrong
/// X-KVMD-User/X-KVMD-Passwd is ForbiddenError 403; no credentials at all is UnauthorizedError 401, unless
/// <c>_check_usc</c> accepts the unix socket's peer uid from <c>auth.usc.users</c>).
/// </remarks>
internal sealed class KvmdClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly KvmdOptions _options;
    private readonly TimeProvider _time;
    private readonly string _prefix;

    public KvmdClient(HttpClient http, KvmdOptions options, TimeProvider time)
    {
        _http = http;
        _options = options;
        _time = time;
        _prefix = options.Url is null ? string.Empty : "api/";
        Endpoint = options.Url?.ToString() ?? options.SocketPath;
    }

    /// <summary>Where kvmd is expected, for messages: the socket path or the URL.</summary>
    public string Endpoint { get; }

    /// <summary>
    /// An HttpClient for <paramref name="options"/>: over the unix socket through
    /// <see cref="SocketsHttpHandler.ConnectCallback"/>, or to <see cref="KvmdOptions.Url"/> (trusting only
    /// <see cref="KvmdOptions.CertificatePath"/> when given). No client-wide timeout: each request has its own.
    /// </summary>
    public static HttpClient CreateHttpClient(KvmdOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            UseCookies = false,
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            ConnectTimeout = options.RequestTimeout,
        };
        Uri baseAddress;
        if (options.Url is { } url)
        {
            var text = url.ToString();
            baseAddress = new Uri(text.EndsWith('/') ? text : text + "/");
            if (!string.IsNullOrEmpty(options.CertificatePath))
            {
                byte[] pinned;
                using (var certificate = X509Certificate2.CreateFromPemFile(options.CertificatePath))
                    pinned = certificate.RawData;
                // PiKVM's nginx certificate is self-signed and names no IP: trust exactly that certificate.
                handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
                    errors == SslPolicyErrors.None
                    || (certificate is not null && (errors & SslPolicyErrors.RemoteCertificateNotAvailable) == 0 && certificate.GetRawCertData().AsSpan().SequenceEqual(pinned));
            }
        }
        else
        {
            var endpoint = new UnixDomainSocketEndPoint(options.SocketPath);
            handler.ConnectCallback = async (_, cancellationToken) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(endpoint, cancellationToken);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
            // kvmd's aiohttp router ignores the host; any name will do.
            baseAddress = new Uri("http://localhost/");
        }
        return new HttpClient(handler) { BaseAddress = baseAddress, Timeout = Timeout.InfiniteTimeSpan };
    }

    public async Task<KvmdMsdState> GetMsdAsync(CancellationToken cancellationToken)
    {
        var result = await SendAsync(HttpMethod.Get, "msd", cancellationToken);
        try
        {
            return KvmdMsdState.Parse(result);
        }
        catch (FormatException ex)
        {
            throw new GadgetUnavailableException($"kvmd answered GET /msd on {Endpoint} with a state this agent cannot read ({ex.Message}): is this kvmd's MSD API?", ex);
        }
    }

    /// <summary>POSTs to <paramref name="pathAndQuery"/> (kvmd takes its parameters in the query string, even on POST).</summary>
    public Task PostAsync(string pathAndQuery, CancellationToken cancellationToken) => SendAsync(HttpMethod.Post, pathAndQuery, cancellationToken);

    private async Task<JsonElement> SendAsync(HttpMethod method, string pathAndQuery, CancellationToken cancellationToken)
    {
        var operation = $"{method} /{pathAndQuery}";
        using var timeout = new CancellationTokenSource(_options.RequestTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        using var request = new HttpRequestMessage(method, new Uri(_prefix + pathAndQuery, UriKind.Relative));
        if (!string.IsNullOrEmpty(_options.User))
        {
            request.Headers.Add("X-KVMD-User", _options.User);
            request.Headers.Add("X-KVMD-Passwd", _options.Password ?? string.Empty);
        }
        HttpStatusCode status;
        string body;
        try
        {
            using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseContentRead, linked.Token);
            status = response.StatusCode;
            body = await response.Content.ReadAsStringAsync(linked.Token);
        }
        catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested)
        {
            throw new GadgetUnavailableException($"kvmd is not answering on {Endpoint}: is kvmd running? ({operation} got no answer within {_options.RequestTimeout.TotalSeconds:0.###} s, Gadget:Kvmd:RequestTimeout.)", ex);
        }
        catch (HttpRequestException ex)
        {
            var detail = _options.Url is null && !File.Exists(_options.SocketPath)
                ? "the socket does not exist"
                : ex.InnerException?.Message ?? ex.Message;
            throw new GadgetUnavailableException($"kvmd is not answering on {Endpoint}: is kvmd running? ({detail}.)", ex);
        }
        return Unwrap(status, body, operation);
    }

    private JsonElement Unwrap(HttpStatusCode status, string body, string operation)
    {
        var (ok, result, error, message) = ParseEnvelope(body);
        switch ((int)status)
        {
            case 200 when ok && result is { } value:
                return value;
            case 200:
                throw new GadgetUnavailableException($"kvmd answered {operation} on {Endpoint} with something that is not kvmd's JSON envelope: is this kvmd?");
            case 401:
                throw new GadgetPermissionException($"kvmd refused {operation} without credentials (401 {error ?? "Unauthorized"}): set Gadget:Kvmd:User and Gadget:Kvmd:Password, or list the agent's unix user in kvmd's auth.usc.users when using the socket.");
            case 403:
                throw new GadgetPermissionException(string.IsNullOrEmpty(_options.User)
                    ? $"kvmd forbids {operation} (403 {error ?? "Forbidden"}): set Gadget:Kvmd:User and Gadget:Kvmd:Password."
                    : $"kvmd rejected user '{_options.User}' for {operation} (403 {error ?? "Forbidden"}): check Gadget:Kvmd:User and Gadget:Kvmd:Password.");
            case 409:
                throw new GadgetBusyException($"kvmd is busy with another MSD operation ({error ?? "MsdIsBusyError"}: {message ?? "busy"}); {operation} was not done.");
            case 400 when error == "MsdLockedError":
                throw new GadgetBusyException($"kvmd's drive is locked on I/O ({error}: {message}): the host may hold the medium; {operation} was not done.");
            case 400 when error is not null:
                throw new KvmdApiException($"kvmd refused {operation}: {error}: {message}", error, message ?? string.Empty);
            default:
                var what = error is null ? string.Empty : $" ({error}: {message})";
                throw new GadgetUnavailableException($"kvmd answered {operation} on {Endpoint} with {(int)status} {status}{what}: see journalctl -u kvmd.");
        }
    }

    private static (bool Ok, JsonElement? Result, string? Error, string? Message) ParseEnvelope(string body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("ok", out var ok) || ok.ValueKind is not (JsonValueKind.True or JsonValueKind.False)
                || !root.TryGetProperty("result", out var result))
                return (false, null, null, null);
            string? error = null, message = null;
            if (!ok.GetBoolean() && result.ValueKind == JsonValueKind.Object)
            {
                error = result.TryGetProperty("error", out var e) && e.ValueKind == JsonValueKind.String ? e.GetString() : null;
                message = result.TryGetProperty("error_msg", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString() : null;
            }
            return (ok.GetBoolean(), result.Clone(), error, message);
        }
        catch (JsonException)
        {
            return (false, null, null, null);
        }
    }

    public void Dispose() => _http.Dispose();
}
