using Microsoft.AspNetCore.Server.Kestrel.Core;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Protocol.Chunking;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>The image catalog: chunk store, ingest, push sessions, imports, garbage collection.</summary>
public static class CatalogSetup
{
    public static WebApplicationBuilder AddCatalog(this WebApplicationBuilder builder)
    {
        builder.Services.AddSingleton(new ContentChunker(ChunkerParameters.Default));
        builder.Services.AddSingleton<ChunkStore>();
        builder.Services.AddSingleton<StoreGate>();
        builder.Services.AddSingleton<UrlSigner>();
        builder.Services.AddSingleton<MediaDetector>();
        builder.Services.AddSingleton<PushSessionStore>();
        builder.Services.AddSingleton<ImageCatalog>();
        builder.Services.AddSingleton<ImageIngestor>();
        builder.Services.AddSingleton<ImportJobs>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<ImportJobs>());
        builder.Services.AddSingleton<GarbageCollector>();
        builder.Services.AddSingleton<GcScheduler>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<GcScheduler>());
        builder.Services.AddSingleton<TransferCounters>();
        builder.Services.AddHostedService<CatalogStartupService>();
        // Images are many gigabytes; the upload route streams, so no global body limit applies to it.
        builder.Services.Configure<KestrelServerOptions>(k => k.Limits.MaxRequestBodySize = 64 * 1024 * 1024);
        // Uploads arrive as gigabytes on few connections: read the socket as soon as it is readable instead of a
        // zero-byte wait before each 4 KiB read (half the receive syscalls of an ingest; docs/ingest-profile.md).
        builder.Services.Configure<Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets.SocketTransportOptions>(
            s => s.WaitForDataBeforeAllocatingBuffer = false);
        return builder;
    }
}
