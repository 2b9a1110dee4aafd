namespace MsdFleet.Coordinator.Storage;

public static class ObjectStoreExtensions
{
    /// <summary>Reads a whole (small) object, or null when it does not exist. Refuses objects over <paramref name="maxBytes"/>.</summary>
    public static async Task<byte[]?> GetBytesAsync(this IObjectStore store, string key, int maxBytes, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        var size = await store.GetSizeAsync(key, cancellationToken);
        if (size is null)
            return null;
        if (size > maxBytes)
            throw new InvalidDataException($"Object '{key}' is {size} bytes; at most {maxBytes} expected.");
        var stream = await store.OpenReadAsync(key, 0, cancellationToken);
        if (stream is null)
            return null;
        await using (stream)
        {
            using var buffer = new MemoryStream((int)size.Value);
            await stream.CopyToAsync(buffer, cancellationToken);
            return buffer.ToArray();
        }
    }
}
