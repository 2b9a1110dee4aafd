using System.Net;
using System.Net.Http.Headers;
using MsdFleet.EdgeAgent.Storage;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>
/// The agent's side of the image-bytes protocol: a manifest (checked against its digest, then kept in
/// <c>metadata/</c>), a layout (short-lived source URLs and where each chunk is in them), and ranged GETs
/// of runs of chunks — from the Coordinator or straight from S3. Errors become <see cref="PullException"/>
/// with the sentence an operator needs, or <see cref="LayoutExpiredException"/> when a source URL went
/// stale and a fresh layout is the fix.
/// </summary>
public sealed class BlobClient(HttpClient http, LocalImageStore store)
{
    public async Task<ImageManifest> GetManifestAsync(ImageDigest digest, CancellationToken cancellationToken)
    {
        var cached = await store.LoadManifestAsync(digest, cancellationToken);
        if (cached is not null)
            return cached;
        using var response = await http.GetAsync(new Uri($"api/v1/blobs/{digest}/manifest", UriKind.Relative), cancellationToken);
        await EnsureSuccessAsync(response, "manifest", cancellationToken);
        var bytes = await response.Content.ReadAsByteArrayAsync(cancellationToken);
        if (ImageDigest.Compute(bytes) != digest)
            throw new PullException($"The manifest served for {digest} does not hash to that digest; refusing it.");
        var manifest = ImageManifest.Parse(bytes);
        await store.SaveManifestAsync(digest, bytes, cancellationToken);
        return manifest;
    }

    public async Task<ImageLayout> GetLayoutAsync(ImageDigest digest, ImageManifest manifest, CancellationToken cancellationToken)
    {
        using var response = await http.GetAsync(new Uri($"api/v1/blobs/{digest}/layout", UriKind.Relative), cancellationToken);
        await EnsureSuccessAsync(response, "layout", cancellationToken);
        var layout = ProtocolSerializer.Deserialize<ImageLayout>(await response.Content.ReadAsByteArrayAsync(cancellationToken), 64 * 1024 * 1024);
        if (layout.Chunks.Count != manifest.Chunks.Count || layout.Sources.Count == 0
            || layout.Chunks.Any(c => c.Source < 0 || c.Source >= layout.Sources.Count || c.Offset < 0))
            throw new PullException($"The layout served for {digest} does not match its manifest.");
        return layout;
    }

    /// <summary>Opens bytes <paramref name="start"/>..<paramref name="end"/> of source <paramref name="source"/>; the caller disposes the response.</summary>
    public async Task<HttpResponseMessage> GetRangeAsync(ImageDigest digest, ImageLayout layout, int source, long start, long end, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(layout);
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(http.BaseAddress!, layout.Sources[source]));
        request.Headers.Range = new RangeHeaderValue(start, end);
        var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        try
        {
            if (response.StatusCode is HttpStatusCode.Forbidden or HttpStatusCode.NotFound)
                throw new LayoutExpiredException($"A chunk source for {digest} answered {(int)response.StatusCode}; fetching a fresh layout.");
            await EnsureSuccessAsync(response, "content", cancellationToken);
            if (response.StatusCode != HttpStatusCode.PartialContent
                || response.Content.Headers.ContentRange is not { From: var from } || from != start)
                throw new PullException($"A chunk source for {digest} answered a range request with {(int)response.StatusCode} and no matching Content-Range.");
            return response;
        }
        catch
        {
            response.Dispose();
            throw;
        }
    }

    private static async Task EnsureSuccessAsync(HttpResponseMessage response, string what, CancellationToken cancellationToken)
    {
        if (response.IsSuccessStatusCode)
            return;
        var detail = await response.Content.ReadAsStringAsync(cancellationToken);
        throw response.StatusCode switch
        {
            HttpStatusCode.Unauthorized => new PullException($"The Coordinator refused the agent's credentials for the image {what} (401); check Agent:Id and Agent:Secret."),
            HttpStatusCode.Forbidden => new PullException($"The Coordinator refused access to the image {what} (403): {Truncate(detail)}"),
            HttpStatusCode.NotFound => new PullException($"The Coordinator has no such image {what} (404): {Truncate(detail)}"),
            _ => new HttpRequestException($"Fetching the image {what} failed with HTTP {(int)response.StatusCode}: {Truncate(detail)}"),
        };
    }

    private static string Truncate(string text) => text.Length <= 300 ? text : text[..300];
}

/// <summary>A source URL of the layout is no longer valid (expired, or the pack was repacked).</summary>
public sealed class LayoutExpiredException : Exception
{
    public LayoutExpiredException() { }
    public LayoutExpiredException(string message) : base(message) { }
    public LayoutExpiredException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>A pull failed for a reason worth reporting to the operator as it is.</summary>
public sealed class PullException : Exception
{
    public PullException() { }
    public PullException(string message) : base(message) { }
    public PullException(string message, Exception innerException) : base(message, innerException) { }
}
