using System.Security.Cryptography;
using MsdFleet.Coordinator.Storage;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// The Coordinator's ECDSA P-256 key for signing desired state, created at first use and kept in the
/// object store (<c>auth/desired-signing-key</c>, PKCS#8), so every replica signs with the same key and
/// agents that pinned its public key keep trusting a restarted Coordinator.
/// </summary>
public sealed class SigningKeyStore(IObjectStore store) : IDisposable
{
    private const string Key = Storage.ObjectKeys.DesiredSigningKey;
    private readonly SemaphoreSlim _lock = new(1, 1);
    private ECDsa? _key;

    public async Task<ECDsa> GetAsync(CancellationToken cancellationToken)
    {
        if (_key is { } loaded)
            return loaded;
        await _lock.WaitAsync(cancellationToken);
        try
        {
            if (_key is not null)
                return _key;
            var key = ECDsa.Create();
            var stored = await store.GetBytesAsync(Key, 16 * 1024, cancellationToken);
            if (stored is not null)
            {
                key.ImportPkcs8PrivateKey(stored, out _);
            }
            else
            {
                key.GenerateKey(ECCurve.NamedCurves.nistP256);
                await store.PutAsync(Key, key.ExportPkcs8PrivateKey(), cancellationToken);
                await store.FlushAsync(cancellationToken);
            }
            _key = key;
            return key;
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
}
