namespace MsdFleet.Coordinator.Storage;

/// <summary>Fails the start, with a message naming the setting, when the configured store cannot be used.</summary>
public sealed class ObjectStoreStartupCheck(IObjectStore store) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (store is S3ObjectStore s3)
            await s3.CheckAsync(cancellationToken);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
