using System.Security.Claims;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;
using MsdFleet.Coordinator.Auth;
using MsdFleet.Coordinator.Fleet;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Naming;
using MsdFleet.Protocol.Serialization;

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
        blobs.MapGet("/layout", LayoutAsync);
        // Capability URLs handed out in layouts: the signature is the credential, like an S3 presigned URL.
        app.MapGet("/api/v1/packs/{packId}", PackAsync).AllowAnonymous();

        app.MapPost("/api/v1/images/import", ImportAsync).RequireAuthorization(Policies.Admin);
        app.MapGet("/api/v1/jobs", ListJobsAsync).RequireAuthorization(Policies.Read);
        app.MapGet("/api/v1/jobs/{id}", JobAsync).RequireAuthorization(Policies.Read);
        app.MapPost("/api/v1/jobs/{id}/cancel", CancelJobAsync).RequireAuthorization(Policies.Admin);
        app.MapPost("/api/v1/gc", CollectAsync).RequireAuthorization(Policies.Admin);
        return app;
    }

    private static async Task<IResult> ListAsync(ImageCatalog catalog, CancellationToken ct) =>
        Results.Ok(await catalog.ListAsync(ct));

    private static async Task<IResult> UploadAsync(string? name, bool? replace, string? sha256, HttpRequest request,
        ImageCatalog catalog, ImageIngestor ingestor, StoreGate gate, AuditLog audit, ClaimsPrincipal user, TimeProvider time, CancellationToken ct)
    {
        var imageName = ValidName(name);
        if (sha256 is not null && (sha256.Length != 64 || !sha256.All(char.IsAsciiHexDigit)))
            throw ApiException.BadRequest("invalid-sha256", "The sha256 parameter must be 64 hexadecimal characters.");
        // Refuse before reading a 5 GB body that could not be stored anyway.
        var existing = await catalog.GetAsync(imageName, ct);
        if (existing is not null && replace != true)
            throw ImageCatalog.ImageExists(imageName);
        await using var lease = await gate.EnterSharedAsync(ct); // until the catalog entry references the new manifest
        var result = await ingestor.IngestAsync(request.Body, sha256, ct);
        var entry = CatalogEntry.For(imageName, result.Digest, result.Manifest, result.Media, time.GetUtcNow());
        await catalog.CommitAsync(entry, replace == true, ct);
        await audit.RecordAsync(user, existing is null ? "image.upload" : "image.replace", imageName, $"{entry.Digest}, {entry.Size} bytes, {result.NewBytes} new", ct);
        var body = new UploadResponse(entry.Name, entry.Digest, entry.Size, entry.Sha256, entry.ChunkCount, result.NewBytes, entry.Media);
        return existing is null ? Results.Created($"/api/v1/images/{Uri.EscapeDataString(imageName)}", body) : Results.Ok(body);
    }

    private static async Task<IResult> DownloadAsync(string? name, ImageCatalog catalog, ChunkStore store, TransferCounters counters, CancellationToken ct)
    {
        var imageName = ValidName(name);
        var entry = await catalog.GetAsync(imageName, ct) ?? throw ImageNotFound(imageName);
        var manifest = await catalog.GetManifestAsync(ImageDigest.Parse(entry.Digest), ct)
            ?? throw new InvalidOperationException($"Manifest {entry.Digest} of catalog entry '{imageName}' is missing.");
        // Counted as served, like the pack route: bytes this Coordinator handed out itself.
        return Results.Stream(new CountingStream(new ManifestReadStream(store, manifest), counters.AddServed), "application/octet-stream", imageName,
            entityTag: new EntityTagHeaderValue($"\"{ImageDigest.Parse(entry.Digest).Hex}\""), enableRangeProcessing: true);
    }

    /// <summary>On the leader: collects now and answers what was freed. Elsewhere: asks the leader to, 202.</summary>
    private static async Task<IResult> CollectAsync(GarbageCollector gc, GcScheduler scheduler, State.LeaderLease leader, CancellationToken ct)
    {
        await leader.FirstRound.WaitAsync(TimeSpan.FromSeconds(10), ct);
        if (leader.IsLeader)
        {
            try
            {
                return Results.Ok(await gc.CollectAsync(ct));
            }
            catch (State.NotLeaderException)
            {
                // Lost the lease meanwhile: hand it to whoever holds it now.
            }
        }
        await scheduler.RequestAsync(ct);
        return Results.Accepted(value: new { status = "requested", leader = await leader.CurrentHolderAsync(ct),
            detail = "Garbage collection runs on the leader replica; it was asked to collect within seconds." });
    }

    private static async Task<IResult> DeleteAsync(string? name, ImageCatalog catalog, AuditLog audit, ClaimsPrincipal user, CancellationToken ct)
    {
        var imageName = ValidName(name);
        var entry = await catalog.DeleteUnusedAsync(imageName, ct);
        await audit.RecordAsync(user, "image.delete", imageName, entry.Digest, ct);
        return Results.NoContent();
    }

    private static async Task<IResult> ManifestAsync(string digest, ClaimsPrincipal user, ImageCatalog catalog, DesiredStateStore desired, CancellationToken ct)
    {
        var parsed = await AuthorizeBlobAsync(digest, user, desired, ct);
        var bytes = await catalog.GetManifestBytesAsync(parsed, ct) ?? throw BlobNotFound(parsed);
        return Results.Bytes(bytes, "application/vnd.msdfleet.manifest.v1+msgpack");
    }

    private static async Task<IResult> LayoutAsync(string digest, ClaimsPrincipal user, ImageCatalog catalog, DesiredStateStore desired,
        ChunkStore chunks, UrlSigner signer, IObjectStore store, IOptions<ObjectStoreOptions> options, Observability.CoordinatorMetrics metrics, TimeProvider time,
        CancellationToken ct)
    {
        var parsed = await AuthorizeBlobAsync(digest, user, desired, ct);
        var manifest = await catalog.GetManifestAsync(parsed, ct) ?? throw BlobNotFound(parsed);
        var lifetime = options.Value.IsS3 ? options.Value.S3.PresignedUrlLifetime : TimeSpan.FromHours(1);
        var sources = new List<string>();
        var sourceIndex = new Dictionary<string, int>(StringComparer.Ordinal);
        var locations = new List<ChunkLocation>(manifest.Chunks.Count);
        foreach (var chunk in manifest.Chunks)
        {
            // Another replica may have written the image: its packs are found by a refresh of the index.
            var location = await chunks.LocateAsync(chunk.Id, ct)
                ?? throw new InvalidOperationException($"Chunk {chunk.IdHex} of {parsed} is missing from the store.");
            if (!sourceIndex.TryGetValue(location.PackId, out var index))
            {
                index = sources.Count;
                sourceIndex[location.PackId] = index;
                sources.Add(store is S3ObjectStore s3
                    ? await s3.PresignGetAsync(ChunkStore.PackKey(location.PackId))
                    : signer.Sign($"api/v1/packs/{location.PackId}", lifetime));
            }
            locations.Add(new ChunkLocation { Source = index, Offset = location.Offset });
        }
        var layout = new ImageLayout { Sources = sources, Chunks = locations, ExpiresAtUnixMs = time.GetUtcNow().Add(lifetime).ToUnixTimeMilliseconds() };
        if (store is S3ObjectStore)
            metrics.BytesPresigned.Add(manifest.Size); // what the URLs cover; the agent fetches only what it lacks
        return Results.Bytes(ProtocolSerializer.Serialize(layout), "application/vnd.msdfleet.layout.v1+msgpack");
    }

    private static async Task<IResult> PackAsync(string packId, long? expires, string? sig, UrlSigner signer, IObjectStore store,
        TransferCounters counters, CancellationToken ct)
    {
        if (packId.Length != 64 || !packId.All(c => char.IsAsciiDigit(c) || char.IsAsciiHexDigitLower(c))
            || expires is null || !signer.Verify($"api/v1/packs/{packId}", expires.Value, sig))
            throw new ApiException(StatusCodes.Status403Forbidden, "invalid-signature", "This pack URL is invalid or has expired; ask the Coordinator for a fresh layout.");
        var stream = await store.OpenReadAsync(ChunkStore.PackKey(packId), 0, ct)
            ?? throw ApiException.NotFound("pack-not-found", $"Pack {packId} is not stored (it may have been repacked); ask for a fresh layout.");
        return Results.Stream(new CountingStream(stream, counters.AddServed), "application/octet-stream", enableRangeProcessing: true);
    }

    private static async Task<IResult> ImportAsync(ImportRequest? request, ImportJobs jobs, CancellationToken ct)
    {
        if (request is null)
            throw ApiException.BadRequest("invalid-body", "Send a JSON body {url, name, sha256?, replace?}.");
        var job = await jobs.StartAsync(request, ct);
        return Results.Accepted($"/api/v1/jobs/{job.Id}", job);
    }

    private static async Task<IResult> JobAsync(string id, ImportJobs jobs, CancellationToken ct) =>
        await jobs.GetAsync(id, ct) is { } job ? Results.Ok(job) : throw JobNotFound(id);

    private static async Task<IResult> ListJobsAsync(HttpContext http, ImportJobs jobs, CancellationToken ct)
    {
        var q = http.Request.Query;
        var limit = q["limit"].ToString() is { Length: > 0 } l
            ? int.TryParse(l, System.Globalization.CultureInfo.InvariantCulture, out var n) && n is >= 1 and <= 1000 ? n
                : throw ApiException.BadRequest("invalid-job-query", "'limit' must be a whole number from 1 to 1000.")
            : 100;
        long? before = q["before"].ToString() is { Length: > 0 } b
            ? DateTimeOffset.TryParse(b, System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.AssumeUniversal, out var t) ? t.ToUnixTimeMilliseconds()
                : throw ApiException.BadRequest("invalid-job-query", "'before' must be an ISO 8601 time (a job's createdAt, to page to older jobs).")
            : null;
        return Results.Ok(await jobs.ListAsync(limit, before, ct));
    }

    private static async Task<IResult> CancelJobAsync(string id, ImportJobs jobs, AuditLog audit, ClaimsPrincipal user, CancellationToken ct)
    {
        var (job, cancelled) = await jobs.CancelAsync(id, ct) ?? throw JobNotFound(id);
        if (!cancelled)
            throw ApiException.Conflict("job-ended", $"Job '{id}' has already ended ({job.State}); there is nothing to cancel.");
        await audit.RecordAsync(user, "job.cancel", id, job.Name, ct);
        return Results.Ok(job);
    }

    private static ApiException JobNotFound(string id) => ApiException.NotFound("job-not-found", $"No job '{id}'.");

    /// <summary>An agent may read only images that some drive of its own desired state names.</summary>
    private static async Task<ImageDigest> AuthorizeBlobAsync(string digest, ClaimsPrincipal user, DesiredStateStore desired, CancellationToken ct)
    {
        if (!ImageDigest.TryParse(digest, out var parsed))
            throw ApiException.BadRequest("invalid-digest", $"'{digest}' is not a digest of the form sha256:<64 lowercase hex>.");
        var agentId = user.FindFirstValue(Roles.AgentIdClaim);
        if (agentId is not null && !await desired.IsAssignedAsync(agentId, parsed.ToString(), ct))
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

public sealed record UploadResponse(string Name, string Digest, long Size, string Sha256, int ChunkCount, long NewBytes, MediaInfo? Media);

/// <summary>A job as the API shows it: <c>queued → running → succeeded | failed | cancelled</c>. The source is shown without its query string: signed URLs must not leak.</summary>
public sealed record JobView(string Id, string Kind, string State, string Source, string Name, long BytesDone, long? BytesTotal, string? Error, CatalogEntry? Image,
    DateTimeOffset CreatedAt);
