using MsdFleet.Coordinator.Storage;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>Loads the pack index and the URL-signing key before the first request.</summary>
public sealed class CatalogStartupService(ChunkStore chunks, UrlSigner signer) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await chunks.LoadAsync(cancellationToken);
        await signer.InitializeAsync(cancellationToken);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
