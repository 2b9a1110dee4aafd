using System.Security.Cryptography;
using System.Text;

namespace MsdFleet.Coordinator.Storage;

/// <summary>
/// Capability URLs for packs served by the Coordinator itself (filesystem backend), the counterpart of
/// S3 presigned URLs: HMAC-SHA256 over path and expiry with a key kept in the store, so every replica
/// accepts them and they survive restarts. Holders can read exactly that pack until it expires.
/// </summary>
public sealed class UrlSigner(IObjectStore store, TimeProvider time)
{
    private const string KeyObject = ObjectKeys.UrlSigningKey;
    private byte[]? _key;

    public async Task InitializeAsync(CancellationToken cancellationToken)
    {
        var key = await store.GetBytesAsync(KeyObject, 1024, cancellationToken);
        if (key is null)
        {
            key = RandomNumberGenerator.GetBytes(32);
            await store.PutAsync(KeyObject, key, cancellationToken);
            await store.FlushAsync(cancellationToken);
        }
        _key = key;
    }

    public string Sign(string path, TimeSpan lifetime)
    {
        var expires = time.GetUtcNow().Add(lifetime).ToUnixTimeSeconds();
        return $"{path}?expires={expires}&sig={Mac(path, expires)}";
    }

    public bool Verify(string path, long expires, string? signature)
    {
        if (signature is null || expires < time.GetUtcNow().ToUnixTimeSeconds())
            return false;
        return CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(Mac(path, expires)), Encoding.ASCII.GetBytes(signature));
    }

    private string Mac(string path, long expires)
    {
        var key = _key ?? throw new InvalidOperationException("UrlSigner used before InitializeAsync.");
        return Convert.ToHexStringLower(HMACSHA256.HashData(key, Encoding.UTF8.GetBytes($"{path}\n{expires}")));
    }
}
