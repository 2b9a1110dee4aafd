using System.Security.Claims;
using Microsoft.Net.Http.Headers;
using MsdFleet.Coordinator.Auth;
using MsdFleet.Coordinator.Fleet;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// <c>/api/v1/images</c> (upload, list, download, delete) and <c>/api/v1/blobs/{digest}</c>, the
/// digest-addressed data path agents pull from with Range requests.
/// </summary>
public static class CatalogEndpoints
{
    public static WebApplication MapCatalogApi(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var images = app.MapGroup("/api/v1/images");
        images.MapGet("/", ListAsync).RequireAuthorization(Policies.Read);
        images.MapPut("/{**name}", UploadAsync).RequireAuthorization(Policies.Admin)
            .WithMetadata(new Microsoft.AspNetCore.Mvc.DisableRequestSizeLimitAttribute());
        images.MapGet("/{**name}", DownloadAsync).RequireAuthorization(Policies.Read);
        images.MapDelete("/{**name}", DeleteAsync).RequireAuthorization(Policies.Admin);

        var blobs = app.MapGroup("/api/v1/blobs/{digest}").RequireAuthorization(Policies.ImageData);
        blobs.MapGet("/manifest", ManifestAsync);
        blobs.MapGet("/content", ContentAsync);
        return app;
    }

    private static async Task<IResult> ListAsync(ImageCatalog catalog, CancellationToken ct) =>
        Results.Ok(await catalog.ListAsync(ct));

    private static async Task<IResult> UploadAsync(string? name, bool? replace, string? sha256, HttpRequest request,
        ImageCatalog catalog, ImageIngestor ingestor, TimeProvider time, CancellationToken ct)
    {
        var imageName = ValidName(name);
        if (sha256 is not null && (sha256.Length != 64 || !sha256.All(char.IsAsciiHexDigit)))
            throw ApiException.BadRequest("invalid-sha256", "The sha256 parameter must be 64 hexadecimal characters.");
        // Refuse before reading a 5 GB body that could not be stored anyway.
        var existing = await catalog.GetAsync(imageName, ct);
        if (existing is not null && replace != true)
            throw ImageCatalog.ImageExists(imageName);
        var result = await ingestor.IngestAsync(request.Body, sha256, ct);
        var entry = new CatalogEntry
        {
            Name = imageName,
            Digest = result.Digest.ToString(),
            Size = result.Manifest.Size,
            Sha256 = result.Manifest.Sha256Hex,
            ChunkCount = result.Manifest.Chunks.Count,
            CreatedAt = time.GetUtcNow(),
        };
        await catalog.CommitAsync(entry, replace == true, ct);
        var body = new UploadResponse(entry.Name, entry.Digest, entry.Size, entry.Sha256, entry.ChunkCount, result.NewBytes);
        return existing is null ? Results.Created($"/api/v1/images/{Uri.EscapeDataString(imageName)}", body) : Results.Ok(body);
    }

    private static async Task<IResult> DownloadAsync(string? name, ImageCatalog catalog, IObjectStore store, CancellationToken ct)
    {
        var imageName = ValidName(name);
        var entry = await catalog.GetAsync(imageName, ct) ?? throw ImageNotFound(imageName);
        var manifest = await catalog.GetManifestAsync(ImageDigest.Parse(entry.Digest), ct)
            ?? throw new InvalidOperationException($"Manifest {entry.Digest} of catalog entry '{imageName}' is missing.");
        return Results.Stream(new ManifestReadStream(store, manifest), "application/octet-stream", imageName,
            entityTag: new EntityTagHeaderValue($"\"{ImageDigest.Parse(entry.Digest).Hex}\""), enableRangeProcessing: true);
    }

    private static async Task<IResult> DeleteAsync(string? name, ImageCatalog catalog, DesiredStateStore desired, CancellationToken ct)
    {
        var imageName = ValidName(name);
        return await desired.RunExclusiveAsync(async () =>
        {
            var entry = await catalog.GetAsync(imageName, ct) ?? throw ImageNotFound(imageName);
            var users = desired.All.Where(kv => kv.Value.Drives.Any(d => d.ImageDigest == entry.Digest)).Select(kv => kv.Key).ToList();
            if (users.Count > 0)
                throw ApiException.Conflict("image-in-use", $"Image '{imageName}' is in the desired state of {string.Join(", ", users)}; change those drives first.");
            await catalog.DeleteAsync(imageName, ct);
            return Results.NoContent();
        }, ct);
    }

    private static async Task<IResult> ManifestAsync(string digest, ClaimsPrincipal user, ImageCatalog catalog, DesiredStateStore desired, CancellationToken ct)
    {
        var parsed = AuthorizeBlob(digest, user, desired);
        var bytes = await catalog.GetManifestBytesAsync(parsed, ct) ?? throw BlobNotFound(parsed);
        return Results.Bytes(bytes, "application/vnd.msdfleet.manifest.v1+msgpack");
    }

    private static async Task<IResult> ContentAsync(string digest, ClaimsPrincipal user, ImageCatalog catalog, DesiredStateStore desired,
        IObjectStore store, TransferCounters counters, CancellationToken ct)
    {
        var parsed = AuthorizeBlob(digest, user, desired);
        var manifest = await catalog.GetManifestAsync(parsed, ct) ?? throw BlobNotFound(parsed);
        return Results.Stream(new ManifestReadStream(store, manifest, counters.AddServed), "application/octet-stream",
            entityTag: new EntityTagHeaderValue($"\"{parsed.Hex}\""), enableRangeProcessing: true);
    }

    /// <summary>An agent may read only images that some drive of its own desired state names.</summary>
    private static ImageDigest AuthorizeBlob(string digest, ClaimsPrincipal user, DesiredStateStore desired)
    {
        if (!ImageDigest.TryParse(digest, out var parsed))
            throw ApiException.BadRequest("invalid-digest", $"'{digest}' is not a digest of the form sha256:<64 lowercase hex>.");
        var agentId = user.FindFirstValue(Roles.AgentIdClaim);
        if (agentId is not null && desired.Get(agentId)?.Drives.Any(d => d.ImageDigest == parsed.ToString()) != true)
            throw new ApiException(StatusCodes.Status403Forbidden, "image-not-assigned", $"Image {parsed} is not in the desired state of agent {agentId}.");
        return parsed;
    }

    private static string ValidName(string? routeValue)
    {
        // ASP.NET Core leaves %2F encoded in route values; it means '/', which names may not contain.
        var name = routeValue?.Replace("%2F", "/", StringComparison.OrdinalIgnoreCase);
        if (!NameRules.TryValidateImageName(name, out var error))
            throw ApiException.BadRequest("invalid-image-name", error);
        return name;
    }

    public static ApiException ImageNotFound(string name) => ApiException.NotFound("image-not-found", $"No image named '{name}' is in the catalog.");

    private static ApiException BlobNotFound(ImageDigest digest) => ApiException.NotFound("blob-not-found", $"No manifest with digest {digest} is stored.");
}

public sealed record UploadResponse(string Name, string Digest, long Size, string Sha256, int ChunkCount, long NewBytes);
