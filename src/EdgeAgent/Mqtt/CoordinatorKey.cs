using MsdFleet.Protocol.IO;
using System.Net.Http.Json;
using System.Security.Cryptography;
using Microsoft.Extensions.Options;
using MsdFleet.EdgeAgent.Storage;

namespace MsdFleet.EdgeAgent.Mqtt;

/// <summary>
/// The Coordinator's public key this agent trusts for desired state. Pinned: from configuration
/// (<c>Agent:CoordinatorPublicKey</c>, base64 SubjectPublicKeyInfo) if given, else the copy saved at first
/// contact (<c>metadata/coordinator.pub</c>), else fetched once from the Coordinator with the agent's own
/// credentials and saved — after that a different key is never accepted without an operator removing the pin.
/// </summary>
public sealed partial class CoordinatorKey(HttpClient http, LocalImageStore store, IOptions<AgentOptions> options, ILogger<CoordinatorKey> logger) : IDisposable
{
    private readonly SemaphoreSlim _lock = new(1, 1);
    private ECDsa? _key;

    private string PinPath => Path.Combine(store.MetadataPath, "coordinator.pub");

    public async Task<ECDsa> GetAsync(CancellationToken cancellationToken)
    {
        if (_key is { } key)
            return key;
        await _lock.WaitAsync(cancellationToken);
        try
        {
            if (_key is not null)
                return _key;
            byte[] spki;
            if (!string.IsNullOrEmpty(options.Value.CoordinatorPublicKey))
                spki = Convert.FromBase64String(options.Value.CoordinatorPublicKey);
            else if (File.Exists(PinPath))
                spki = await File.ReadAllBytesAsync(PinPath, cancellationToken);
            else
            {
                var answer = await http.GetFromJsonAsync(new Uri("api/v1/signing-key", UriKind.Relative), AgentJsonContext.Default.SigningKeyAnswer, cancellationToken)
                    ?? throw new InvalidOperationException("The Coordinator did not return its signing key.");
                spki = Convert.FromBase64String(answer.PublicKey);
                await AtomicFile.WriteAsync(PinPath, spki, cancellationToken);
                Log.Pinned(logger, answer.KeyId);
            }
            var loaded = ECDsa.Create();
            loaded.ImportSubjectPublicKeyInfo(spki, out _);
            _key = loaded;
            return loaded;
        }
        finally
        {
            _lock.Release();
        }
    }

    public void Dispose()
    {
        _key?.Dispose();
        _lock.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Pinned the Coordinator's signing key {KeyId} at first contact")]
        public static partial void Pinned(ILogger logger, string keyId);
    }
}
