namespace MsdFleet.Coordinator.Storage;

/// <summary>
/// The Coordinator's only durable state: a flat key/value store of immutable-ish objects with the
/// semantics S3 offers. Every put is atomic (readers see the whole object or none); a put is durable
/// once <see cref="FlushAsync"/> has returned, which lets the filesystem backend batch fsyncs across
/// thousands of chunk writes. Keys come from <see cref="ObjectKeys"/> only.
/// </summary>
public interface IObjectStore
{
    /// <summary>The object's size in bytes, or null when it does not exist.</summary>
    Task<long?> GetSizeAsync(string key, CancellationToken cancellationToken);

    Task PutAsync(string key, ReadOnlyMemory<byte> content, CancellationToken cancellationToken);

    /// <summary>Opens an object for reading from <paramref name="offset"/>, or null when it does not exist.</summary>
    Task<Stream?> OpenReadAsync(string key, long offset, CancellationToken cancellationToken);

    /// <summary>Returns false when there was nothing to delete.</summary>
    Task<bool> DeleteAsync(string key, CancellationToken cancellationToken);

    /// <summary>Keys under <paramref name="prefix"/> (which ends in '/'), in no particular order.</summary>
    IAsyncEnumerable<string> ListAsync(string prefix, CancellationToken cancellationToken);

    /// <summary>Durability barrier: every put that returned before this call survives a power loss after it.</summary>
    Task FlushAsync(CancellationToken cancellationToken);
}

/// <summary>The store could not be reached or failed; maps to 503 over HTTP.</summary>
public sealed class ObjectStoreUnavailableException : Exception
{
    public ObjectStoreUnavailableException() { }
    public ObjectStoreUnavailableException(string message) : base(message) { }
    public ObjectStoreUnavailableException(string message, Exception innerException) : base(message, innerException) { }
}
