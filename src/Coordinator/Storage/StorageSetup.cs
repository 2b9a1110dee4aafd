namespace MsdFleet.Coordinator.Storage;

/// <summary>The object store (filesystem or S3) and its start-up check.</summary>
public static class StorageSetup
{
    public static WebApplicationBuilder AddObjectStore(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<ObjectStoreOptions>().BindConfiguration(ObjectStoreOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        var options = builder.Configuration.GetSection(ObjectStoreOptions.Section).Get<ObjectStoreOptions>() ?? new ObjectStoreOptions();
        if (options.IsS3)
            builder.Services.AddSingleton<IObjectStore, S3ObjectStore>();
        else
            builder.Services.AddSingleton<IObjectStore, FileSystemObjectStore>();
        // Registered first so a wrong endpoint or secret stops the start before anything else runs.
        builder.Services.AddHostedService<ObjectStoreStartupCheck>();
        builder.Services.AddSingleton(TimeProvider.System);
        return builder;
    }
}
