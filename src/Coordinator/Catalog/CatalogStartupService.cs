using MsdFleet.Coordinator.Storage;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>Loads the pack index, the URL-signing key and open pushes before the first request.</summary>
public sealed class CatalogStartupService(ChunkStore chunks, UrlSigner signer, PushSessionStore sessions) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await chunks.LoadAsync(cancellationToken);
        await signer.InitializeAsync(cancellationToken);
        await sessions.LoadAsync(cancellationToken);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
