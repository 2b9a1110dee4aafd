using MsdFleet.Protocol.IO;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Authentication;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Naming;
using MsdFleet.Protocol.Security;

namespace MsdFleet.EdgeAgent.Enrollment;

/// <summary>
/// <c>msdfleet-agent enroll --coordinator URL --token T [--ca-sha256 FP | --ca FILE]</c>: exchanges a
/// one-time enrollment token for this device's identity and writes the agent's configuration (mode
/// 0600) and the CA to trust. With <c>--ca-sha256</c> the CA is fetched from the Coordinator and used
/// only if its SHA-256 matches the fingerprint the admin was shown, so the very first contact is
/// already authenticated. Nothing is written unless the whole exchange succeeded.
/// </summary>
public static class EnrollCommand
{
    public const string DefaultConfigPath = "/etc/msdfleet/agent.json";
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    private const string Usage = """
        usage: msdfleet-agent enroll --coordinator URL --token TOKEN [--id AGENT_ID] [--ca-sha256 FP | --ca FILE]
                                     [--config FILE] [--force] [--allow-http]
          --coordinator URL  the Coordinator, e.g. https://fleet.example.net/
          --token TOKEN      the enrollment token (or set MSDFLEET_ENROLL_TOKEN)
          --id AGENT_ID      this device's agent id, for a fleet token (default: the host name);
                             a one-device token names the id itself
          --ca-sha256 FP     fingerprint of the Coordinator's CA, as printed with the token
          --ca FILE          a PEM CA bundle to trust instead
          --config FILE      where to write the configuration (default /etc/msdfleet/agent.json,
                             or $MSDFLEET_AGENT_CONFIG); the CA goes beside it as ca.crt
          --force            replace an existing enrollment in that file
          --allow-http       allow a plain-HTTP Coordinator that is not on loopback
        exit codes: 0 enrolled, 2 usage, 3 refused by the Coordinator, 4 cannot reach or trust it, 5 cannot write
        """;

    public static async Task<int> RunAsync(IReadOnlyList<string> args, TextWriter output, TextWriter error, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(error);
        string? coordinator = null, token = Environment.GetEnvironmentVariable("MSDFLEET_ENROLL_TOKEN"), caSha256 = null, caFile = null, agentId = null;
        var configPath = Environment.GetEnvironmentVariable("MSDFLEET_AGENT_CONFIG") is { Length: > 0 } env ? env : DefaultConfigPath;
        bool force = false, allowHttp = false;
        for (var i = 0; i < args.Count; i++)
        {
            string? Next() => i + 1 < args.Count ? args[++i] : null;
            switch (args[i])
            {
                case "--coordinator": coordinator = Next(); break;
                case "--token": token = Next(); break;
                case "--id": agentId = Next(); break;
                case "--ca-sha256": caSha256 = Next(); break;
                case "--ca": caFile = Next(); break;
                case "--config": configPath = Next() ?? configPath; break;
                case "--force": force = true; break;
                case "--allow-http": allowHttp = true; break;
                case "-h" or "--help": await output.WriteLineAsync(Usage); return 0;
                default: return await UsageErrorAsync(error, $"unknown argument '{args[i]}'");
            }
        }
        if (coordinator is null || !Uri.TryCreate(coordinator, UriKind.Absolute, out var baseUri) || baseUri.Scheme is not ("http" or "https"))
            return await UsageErrorAsync(error, "--coordinator must be an absolute http(s) URL");
        if (string.IsNullOrWhiteSpace(token))
            return await UsageErrorAsync(error, "--token is required (or set MSDFLEET_ENROLL_TOKEN)");
        if (caSha256 is not null && caFile is not null)
            return await UsageErrorAsync(error, "give --ca-sha256 or --ca, not both");
        if (agentId is not null && !NameRules.TryValidateAgentId(agentId, out var badId))
            return await UsageErrorAsync(error, $"--id: {badId}");
        // Before the token is spent: a fleet token's device slot is not given back if the file cannot be written.
        if (!force && await HoldsEnrollmentAsync(configPath, cancellationToken) is { } enrolledAs)
        {
            await error.WriteLineAsync($"enroll: {configPath} already holds an enrollment (agent {enrolledAs}); pass --force to replace it.");
            return 5;
        }
        if (baseUri.Scheme == "http" && !baseUri.IsLoopback && !allowHttp)
            return await UsageErrorAsync(error, "refusing to send the enrollment token and receive a secret over plain HTTP; use https:// (or --allow-http on a trusted network)");
        if (!baseUri.AbsoluteUri.EndsWith('/'))
            baseUri = new Uri(baseUri.AbsoluteUri + "/");

        TlsTrust trust;
        string? caPem = null;
        try
        {
            if (caFile is not null)
            {
                trust = TlsTrust.FromPemFile(caFile);
                caPem = await File.ReadAllTextAsync(caFile, cancellationToken);
            }
            else if (caSha256 is not null)
            {
                var expected = TlsTrust.NormalizeFingerprint(caSha256);
                caPem = await FetchCaAsync(baseUri, cancellationToken);
                var actual = TlsTrust.Sha256OfPem(caPem);
                if (actual != expected)
                {
                    await error.WriteLineAsync($"enroll: the Coordinator's CA is {actual}, not the expected {expected}; nothing was written. Check --coordinator and --ca-sha256.");
                    return 4;
                }
                trust = TlsTrust.FromPem(caPem);
            }
            else
            {
                trust = TlsTrust.System;
            }
        }
        catch (ArgumentException ex)
        {
            return await UsageErrorAsync(error, ex.Message);
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or System.Security.Cryptography.CryptographicException)
        {
            await error.WriteLineAsync($"enroll: cannot fetch the Coordinator's CA from {baseUri}: {ex.Message}");
            return 4;
        }

        EnrollmentAnswer answer;
        using (var http = new HttpClient(trust.Apply(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(15), AllowAutoRedirect = false }))
        {
            BaseAddress = baseUri,
            Timeout = TimeSpan.FromSeconds(60),
        })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "api/v1/enroll");
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token.Trim());
            // Which id this device wants (a fleet token lets it choose; a one-device token checks it), and its host name.
            JsonObject wanted = new() { ["hostName"] = Environment.MachineName };
            if (agentId is not null)
                wanted["agentId"] = agentId;
            request.Content = new StringContent(wanted.ToJsonString(), Encoding.UTF8, "application/json");
            HttpResponseMessage response;
            try
            {
                response = await http.SendAsync(request, cancellationToken);
            }
            catch (HttpRequestException ex) when (ex.InnerException is AuthenticationException)
            {
                await error.WriteLineAsync($"enroll: {baseUri} presented a certificate this device does not trust ({ex.InnerException.Message}). " +
                    "Pass --ca-sha256 with the fingerprint shown when the token was created, or --ca FILE.");
                return 4;
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
            {
                await error.WriteLineAsync($"enroll: cannot reach {baseUri}: {ex.Message}");
                return 4;
            }
            using (response)
            {
                var body = await response.Content.ReadAsStringAsync(cancellationToken);
                if (response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden or HttpStatusCode.BadRequest or HttpStatusCode.Conflict)
                {
                    // The Coordinator says why (a problem's detail): a used-up token, an id the token does not allow, an id taken …
                    var detail = ProblemDetail(body);
                    await error.WriteLineAsync(detail is not null
                        ? $"enroll: the Coordinator refused: {detail}"
                        : "enroll: the Coordinator refused the token: it is unknown, was already used, was revoked or has expired. Ask an admin for a new one.");
                    return 3;
                }
                if (!response.IsSuccessStatusCode)
                {
                    await error.WriteLineAsync($"enroll: the Coordinator answered {(int)response.StatusCode}: {body}");
                    return 3;
                }
                try
                {
                    answer = JsonSerializer.Deserialize(body, AgentJsonContext.Default.EnrollmentAnswer)
                        ?? throw new JsonException("empty answer");
                }
                catch (JsonException ex)
                {
                    await error.WriteLineAsync($"enroll: the Coordinator's answer is not an enrollment: {ex.Message}");
                    return 3;
                }
            }
        }
        if (!NameRules.TryValidateAgentId(answer.AgentId, out var idError) || string.IsNullOrEmpty(answer.Secret)
            || !Uri.TryCreate(answer.BrokerUrl, UriKind.Absolute, out var broker) || broker.Scheme is not ("mqtt" or "mqtts"))
        {
            await error.WriteLineAsync($"enroll: the Coordinator's answer is incomplete or invalid ({idError ?? "broker URL"}); nothing was written.");
            return 3;
        }
        // A private CA received over the authenticated channel is kept; with --ca-sha256 it is the one already checked.
        caPem ??= answer.CaCertificate;

        try
        {
            return await WriteConfigurationAsync(configPath, answer, caPem, force, output, error, cancellationToken);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            await error.WriteLineAsync($"enroll: cannot write {configPath}: {ex.Message}. The token is used up; ask an admin for a new one (with \"replace\": true).");
            return 5;
        }
    }

    private static string? ProblemDetail(string body)
    {
        try
        {
            return JsonNode.Parse(body)?["detail"]?.GetValue<string>();
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>The agent id the file at <paramref name="configPath"/> is enrolled as, if it holds an enrollment.</summary>
    private static async Task<string?> HoldsEnrollmentAsync(string configPath, CancellationToken cancellationToken)
    {
        try
        {
            if (!File.Exists(configPath))
                return null;
            var root = JsonNode.Parse(await File.ReadAllTextAsync(configPath, cancellationToken)) as JsonObject;
            return root?["Agent"]?["Secret"] is not null ? root["Agent"]?["Id"]?.ToString() ?? "?" : null;
        }
        catch (Exception ex) when (ex is JsonException or IOException or UnauthorizedAccessException)
        {
            return null; // written over (or refused) by the same check after the exchange
        }
    }

    private static async Task<int> WriteConfigurationAsync(string configPath, EnrollmentAnswer answer, string? caPem, bool force,
        TextWriter output, TextWriter error, CancellationToken cancellationToken)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(configPath))!;
        Directory.CreateDirectory(directory);
        JsonObject root = [];
        if (File.Exists(configPath))
        {
            // Keep what the admin put there (Gadget, cache settings …); replace only the identity.
            root = JsonNode.Parse(await File.ReadAllTextAsync(configPath, cancellationToken)) as JsonObject ?? [];
            if (root["Agent"]?["Secret"] is not null && !force)
            {
                await error.WriteLineAsync($"enroll: {configPath} already holds an enrollment (agent {root["Agent"]?["Id"]}); pass --force to replace it.");
                return 5;
            }
        }
        var agent = root["Agent"] as JsonObject ?? [];
        agent["Id"] = answer.AgentId;
        agent["Secret"] = answer.Secret;
        agent["CoordinatorUrl"] = answer.CoordinatorUrl;
        agent["CoordinatorPublicKey"] = answer.SigningPublicKey;
        var caPath = Path.Combine(directory, "ca.crt");
        if (caPem is not null)
        {
            await AtomicFile.WriteAsync(caPath, Encoding.ASCII.GetBytes(caPem), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead, cancellationToken);
            agent["CaCertificatePath"] = caPath;
        }
        else
        {
            agent.Remove("CaCertificatePath");
        }
        root["Agent"] = agent;
        var mqtt = root["Mqtt"] as JsonObject ?? [];
        mqtt["Broker"] = answer.BrokerUrl;
        mqtt["TopicPrefix"] = answer.TopicPrefix;
        root["Mqtt"] = mqtt;
        var bytes = Encoding.UTF8.GetBytes(root.ToJsonString(Indented));
        await AtomicFile.WriteAsync(configPath, bytes, UnixFileMode.UserRead | UnixFileMode.UserWrite, cancellationToken);
        await output.WriteLineAsync($"Enrolled as '{answer.AgentId}'. Wrote {configPath} (mode 0600){(caPem is null ? string.Empty : $" and {caPath}")}.");
        await output.WriteLineAsync($"Broker {answer.BrokerUrl}, Coordinator {answer.CoordinatorUrl}, signing key {answer.SigningKeyId} pinned.");
        await output.WriteLineAsync("Start or restart the agent: systemctl restart msdfleet-agent");
        return 0;
    }

    private static async Task<string> FetchCaAsync(Uri baseUri, CancellationToken cancellationToken)
    {
        // Not trusted yet, on purpose: what comes back is only used if its digest is the pinned one.
        using var http = new HttpClient(new SocketsHttpHandler
        {
            ConnectTimeout = TimeSpan.FromSeconds(15),
            AllowAutoRedirect = false,
#pragma warning disable CA5359 // the answer is trusted only through its SHA-256, checked by the caller
            SslOptions = { RemoteCertificateValidationCallback = (_, _, _, _) => true },
#pragma warning restore CA5359
        })
        { BaseAddress = baseUri, Timeout = TimeSpan.FromSeconds(30) };
        using var response = await http.GetAsync("api/v1/tls/ca", cancellationToken);
        if (!response.IsSuccessStatusCode)
            throw new HttpRequestException($"GET api/v1/tls/ca answered {(int)response.StatusCode}; this Coordinator has no private CA, so --ca-sha256 does not apply.");
        var pem = await response.Content.ReadAsStringAsync(cancellationToken);
        return pem.Length > 64 * 1024 ? throw new HttpRequestException("The CA answer is too large.") : pem;
    }

    private static async Task<int> UsageErrorAsync(TextWriter error, string message)
    {
        await error.WriteLineAsync($"enroll: {message}");
        await error.WriteLineAsync(Usage);
        return 2;
    }
}
