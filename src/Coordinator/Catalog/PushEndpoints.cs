using System.Buffers;
using System.Security.Cryptography;
using System.Security.Claims;
using MsdFleet.Coordinator.Auth;
using MsdFleet.Coordinator.Fleet;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// The client-side push protocol (msdctl, web UI): <c>POST /api/v1/uploads</c> with a manifest answers
/// which chunks the store lacks; <c>POST …/chunks</c> sends some of them as length-prefixed frames (each
/// verified against the manifest); <c>POST …/commit</c> names the image. An interrupted push asks again
/// (<c>GET /api/v1/uploads/{id}</c>) and sends only what is still missing.
/// </summary>
public static class PushEndpoints
{
    public const string ManifestMediaType = "application/vnd.msdfleet.manifest.v1+msgpack";

    public static WebApplication MapPushApi(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        // Admins push images; an agent may push only the snapshot its desired state asks for (checked per request).
        var uploads = app.MapGroup("/api/v1/uploads").RequireAuthorization(Policies.Push);
        uploads.MapPost("/", CreateAsync).WithMetadata(new Microsoft.AspNetCore.Mvc.RequestSizeLimitAttribute(ImageManifest.MaxEncodedBytes));
        uploads.MapGet("/{id}", StatusAsync);
        uploads.MapPost("/{id}/parts/{part:int}", PartAsync).WithMetadata(new Microsoft.AspNetCore.Mvc.RequestSizeLimitAttribute(PushSession.MaxPartEntries * PushSession.PartEntryBytes));
        uploads.MapPost("/{id}/chunks", ChunksAsync).WithMetadata(new Microsoft.AspNetCore.Mvc.RequestSizeLimitAttribute(256L * 1024 * 1024));
        uploads.MapPost("/{id}/commit", CommitAsync);
        uploads.MapDelete("/{id}", AbortAsync);
        return app;
    }

    private static async Task<IResult> CreateAsync(HttpRequest request, PushSessionStore sessions, ChunkStore chunks, DesiredStateStore desired,
        ClaimsPrincipal user, CancellationToken ct)
    {
        var agent = AgentOf(user);
        if (agent is not null && (await PendingSnapshotsAsync(agent, desired, ct)).Count == 0)
            throw NoSnapshotRequested(agent);
        if (request.Query.TryGetValue("streaming", out var streaming))
        {
            if (streaming != "true")
                throw ApiException.BadRequest("invalid-query", "streaming is 'true' or absent.");
            var streamed = await sessions.CreateStreamingAsync(agent, ct);
            return Results.Created($"/api/v1/uploads/{streamed.Id}", Status(streamed, chunks));
        }
        using var buffer = new MemoryStream();
        await request.Body.CopyToAsync(buffer, ct);
        ImageManifest manifest;
        try
        {
            manifest = ImageManifest.Parse(buffer.ToArray());
        }
        catch (ProtocolFormatException ex)
        {
            throw ApiException.BadRequest("invalid-manifest", $"The body is not a valid manifest: {ex.Message}");
        }
        if (manifest.Chunker != Protocol.Chunking.ChunkerParameters.Default)
            throw ApiException.BadRequest("unsupported-chunker", "The manifest was cut with other chunker parameters than this Coordinator uses; dedup would not work.");
        var session = await sessions.CreateAsync(manifest, agent, ct);
        // Chunks another replica stored since this one last looked count as present: catch up before answering.
        await chunks.CatchUpAsync(ct);
        return Results.Created($"/api/v1/uploads/{session.Id}", Status(session, chunks));
    }

    private static async Task<IResult> StatusAsync(string id, PushSessionStore sessions, ChunkStore chunks, DesiredStateStore desired, ClaimsPrincipal user, CancellationToken ct)
    {
        var session = await SessionAsync(id, sessions, desired, user, ct);
        await chunks.CatchUpAsync(ct); // the push may have gone on through another replica
        return Results.Ok(Status(session, chunks));
    }

    /// <summary>
    /// Declares part <paramref name="part"/> of a streamed push's manifest (36-byte entries: SHA-256, 4-byte big-endian
    /// length) and answers which of its chunks the store lacks, by index in the part, so the client sends only those.
    /// </summary>
    private static async Task<IResult> PartAsync(string id, int part, HttpRequest request, PushSessionStore sessions, ChunkStore chunks,
        DesiredStateStore desired, ClaimsPrincipal user, CancellationToken ct)
    {
        var session = await SessionAsync(id, sessions, desired, user, ct);
        if (!session.Streaming)
            throw ApiException.Conflict("not-streaming", "This upload was opened with a whole manifest; parts belong to uploads opened with ?streaming=true.");
        if (part is < 0 or > 1_000_000)
            throw ApiException.BadRequest("invalid-part", $"Part numbers run from 0 to 1000000, not {part}.");
        using var buffer = new MemoryStream();
        await request.Body.CopyToAsync(buffer, ct);
        var entries = buffer.ToArray();
        IReadOnlyList<ManifestChunk> declared;
        try
        {
            declared = PushSession.ParsePart(entries);
        }
        catch (ProtocolFormatException ex)
        {
            throw ApiException.BadRequest("invalid-part", ex.Message);
        }
        if (!await sessions.AddPartAsync(session, part, entries, ct))
            throw ApiException.Conflict("part-conflict", $"Part {part} of this upload was already declared with other chunks; a part never changes.");
        await chunks.CatchUpAsync(ct);
        var missing = new List<int>();
        for (var i = 0; i < declared.Count; i++)
            if (!chunks.Contains(declared[i].Id))
                missing.Add(i);
        return Results.Ok(new PartResult(part, declared.Count, missing));
    }

    private static async Task<IResult> ChunksAsync(string id, HttpRequest request, PushSessionStore sessions, ChunkStore chunks, StoreGate gate,
        DesiredStateStore desired, ClaimsPrincipal user, CancellationToken ct)
    {
        var session = await SessionAsync(id, sessions, desired, user, ct);
        await using var lease = await gate.EnterSharedAsync(ct);
        await using var writer = new PackWriter(chunks);
        var received = await ChunkFrameReceiver.ReceiveAsync(request.Body, session, sessions, writer, ct);
        await writer.CompleteAsync(ct);
        await chunks.Objects.FlushAsync(ct);
        // Counts only: the full list of what is still missing (GET …/{id}) would be ~1 MB of JSON per GiB, on every batch.
        var missing = Missing(session, chunks);
        return Results.Ok(new ChunksResult(received, writer.NewBytes, missing.Count, missing.Sum(c => (long)c.Length)));
    }

    private static async Task<IResult> CommitAsync(string id, CommitRequest? body, PushSessionStore sessions, ChunkStore chunks,
        ImageIngestor ingestor, ImageCatalog catalog, MediaDetector media, StoreGate gate, TimeProvider time, DesiredStateStore desired,
        ClaimsPrincipal user, CancellationToken ct)
    {
        var session = await SessionAsync(id, sessions, desired, user, ct);
        await using var lease = await gate.EnterSharedAsync(ct); // the session keeps chunks live until the entry does
        if (body is null)
            throw ApiException.BadRequest("invalid-body", "Send a JSON body {\"name\": …, \"replace\": false}.");
        if (!NameRules.TryValidateImageName(body.Name, out var nameError))
            throw ApiException.BadRequest("invalid-image-name", nameError);
        var (manifest, digest) = await ManifestToCommitAsync(session, body, sessions, ct);
        await chunks.CatchUpAsync(ct);
        var status = Status(session, chunks);
        if (status.Missing.Count > 0)
            throw ApiException.Conflict("chunks-missing", $"{status.Missing.Count} chunks ({status.MissingBytes} bytes) have not been sent yet.");
        var agent = AgentOf(user);
        if (agent is not null && (!(await PendingSnapshotsAsync(agent, desired, ct)).Contains(body.Name) || body.Replace == true))
            throw new ApiException(StatusCodes.Status403Forbidden, "no-snapshot-requested", $"Agent '{agent}' was not asked to save a snapshot named '{body.Name}'.");
        var existing = await catalog.GetAsync(body.Name, ct);
        // An agent that committed, then died before it recorded so, commits again: the same bytes are the same answer.
        if (agent is not null && existing is not null && existing.Digest == digest.ToString())
        {
            await sessions.RemoveAsync(id, ct);
            return Results.Ok(existing);
        }
        if (existing is not null && body.Replace != true)
            throw ImageCatalog.ImageExists(body.Name);
        // Every chunk was checked against its id on arrival; the whole-image SHA-256 in the manifest is the
        // client's word, checked here once, so no agent is ever sent an image it must refuse. A client that
        // cannot hash the whole image cheaply (a browser) sends 32 zero bytes and the Coordinator fills it in.
        // A manifest already in the store was verified when it was committed (every manifest object is written only
        // after its whole-image SHA-256 was checked or computed), and its name is the hash of these very bytes, so
        // a re-push of an image the store holds re-reads nothing. The shared store lease keeps GC from removing it.
        var alreadyVerified = manifest.Sha256.AsSpan().IndexOfAnyExcept((byte)0) >= 0
            && await chunks.Objects.GetSizeAsync(ObjectKeys.Manifest(digest), ct) is not null;
        if (!alreadyVerified)
            manifest = await VerifyWholeImageAsync(session, manifest, chunks, ct);
        digest = await ingestor.CommitManifestAsync(manifest, ct);
        await using var reader = new ManifestReadStream(chunks, manifest);
        var entry = CatalogEntry.For(body.Name, digest, manifest, await media.ProbeAsync(reader, manifest.Size, ct), time.GetUtcNow());
        await catalog.CommitAsync(entry, body.Replace == true, ct);
        await sessions.RemoveAsync(id, ct);
        return existing is null ? Results.Created($"/api/v1/images/{Uri.EscapeDataString(body.Name)}", entry) : Results.Ok(entry);
    }

    /// <summary>
    /// The manifest a commit names: the session's, or for a streamed push the one assembled from parts 0..parts-1
    /// with the size and SHA-256 the commit states (absent SHA-256: computed here, as for a browser).
    /// </summary>
    private static async Task<(ImageManifest Manifest, ImageDigest Digest)> ManifestToCommitAsync(PushSession session, CommitRequest body,
        PushSessionStore sessions, CancellationToken ct)
    {
        if (!session.Streaming)
            return (session.Manifest, session.Digest);
        if (body.Parts is not { } count || count < 0)
            throw ApiException.BadRequest("invalid-body", "A streamed upload's commit names how many parts it has: {\"name\": …, \"parts\": N, \"size\": …, \"sha256\": …}.");
        if (body.Size is not { } size || size < 0)
            throw ApiException.BadRequest("invalid-body", "A streamed upload's commit states the image size in bytes (\"size\").");
        var sha256 = new byte[32];
        if (body.Sha256 is { } hex)
        {
            if (hex.Length != 64 || !hex.All(char.IsAsciiHexDigit))
                throw ApiException.BadRequest("invalid-sha256", "\"sha256\" is 64 hexadecimal digits.");
            sha256 = Convert.FromHexString(hex);
        }
        await sessions.RefreshPartsAsync(session, ct);
        var chunks = session.ChunksOfParts(count)
            ?? throw ApiException.Conflict("parts-missing", $"Not every part from 0 to {count - 1} has been declared.");
        if (session.PartNumbers.Any(p => p >= count))
            throw ApiException.Conflict("unexpected-part", $"Parts beyond {count - 1} were declared; commit with the number of parts the image has.");
        var manifest = PushSession.EmptyManifest with { Size = chunks.Sum(c => (long)c.Length), Sha256 = sha256, Chunks = chunks };
        if (manifest.Size != size)
            throw ApiException.BadRequest("size-mismatch", $"The declared parts hold {manifest.Size} bytes, not the {size} the commit states; nothing was committed.");
        return (manifest, ImageDigest.Compute(manifest.ToBytes()));
    }

    /// <summary>
    /// Checks the manifest's whole-image SHA-256 against the stored chunks (or fills it in when the client sent
    /// zeros). What arrived in image order was hashed on arrival; only the rest is read back from the store here.
    /// A second commit of the same session racing this one (a retry) hashes everything itself.
    /// </summary>
    private static async Task<ImageManifest> VerifyWholeImageAsync(PushSession session, ImageManifest manifest, ChunkStore chunks, CancellationToken ct)
    {
        var inOrder = session.WholeImage.Take();
        using var hash = inOrder?.Hash ?? IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        await using (var verify = new ManifestReadStream(chunks, manifest))
        {
            verify.Position = inOrder?.Offset ?? 0;
            var block = ArrayPool<byte>.Shared.Rent(1 << 20);
            try
            {
                int n;
                while ((n = await verify.ReadAsync(block.AsMemory(0, 1 << 20), ct)) > 0)
                    hash.AppendData(block, 0, n);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(block);
            }
        }
        var actual = hash.GetHashAndReset();
        if (manifest.Sha256.AsSpan().IndexOfAnyExcept((byte)0) < 0)
            return manifest with { Sha256 = actual };
        if (!actual.AsSpan().SequenceEqual(manifest.Sha256))
            throw new ApiException(StatusCodes.Status422UnprocessableEntity, "sha256-mismatch",
                "The chunks are intact but the manifest's whole-image SHA-256 does not match them; nothing was committed.");
        return manifest;
    }

    private static async Task<IResult> AbortAsync(string id, PushSessionStore sessions, DesiredStateStore desired, ClaimsPrincipal user, CancellationToken ct)
    {
        await SessionAsync(id, sessions, desired, user, ct);
        await sessions.RemoveAsync(id, ct);
        return Results.NoContent();
    }

    /// <summary>An open session the caller may use: people may use any, an agent only the ones it opened (others look absent).</summary>
    private static async Task<PushSession> SessionAsync(string id, PushSessionStore sessions, DesiredStateStore desired, ClaimsPrincipal user, CancellationToken ct)
    {
        var session = await sessions.GetAsync(id, ct);
        var agent = AgentOf(user);
        if (agent is not null && (await PendingSnapshotsAsync(agent, desired, ct)).Count == 0)
            throw NoSnapshotRequested(agent);
        if (session is null || (agent is not null && session.Owner != agent))
            throw ApiException.NotFound("upload-not-found", $"No open upload '{id}' (it may have been committed or expired).");
        return session;
    }

    private static ApiException NoSnapshotRequested(string agent) =>
        new(StatusCodes.Status403Forbidden, "no-snapshot-requested", $"Agent '{agent}' may push an image only when a snapshot of one of its drives was asked for.");

    private static string? AgentOf(ClaimsPrincipal user) => user.IsInRole(Roles.Agent) ? user.FindFirstValue(Roles.AgentIdClaim) : null;

    /// <summary>Names the agent's desired state asks it to save drives as.</summary>
    private static async Task<HashSet<string>> PendingSnapshotsAsync(string agentId, DesiredStateStore desired, CancellationToken ct) =>
        ((await desired.GetFreshAsync(agentId, ct))?.Drives ?? []).Select(d => d.Snapshot?.Name).OfType<string>().ToHashSet(StringComparer.Ordinal);

    private static List<ManifestChunk> Missing(PushSession session, ChunkStore chunks) =>
        (session.Streaming ? session.DeclaredChunks : session.Manifest.Chunks).Where(c => !chunks.Contains(c.Id)).DistinctBy(c => System.Buffers.Binary.BinaryPrimitives.ReadUInt128LittleEndian(c.Id)).ToList();

    private static PushStatus Status(PushSession session, ChunkStore chunks)
    {
        var missing = Missing(session, chunks);
        // A streamed push has no digest until its commit; its size is what its parts declare so far.
        return new PushStatus(session.Id, session.Streaming ? null : session.Digest.ToString(),
            session.Streaming ? session.DeclaredChunks.Sum(c => (long)c.Length) : session.Manifest.Size, missing.Select(c => c.IdHex).ToList(),
            missing.Sum(c => (long)c.Length), session.ExpiresAt);
    }
}

/// <summary>The commit body; <see cref="Parts"/>, <see cref="Size"/> and <see cref="Sha256"/> only for a streamed upload.</summary>
public sealed record CommitRequest(string? Name, bool? Replace, int? Parts = null, long? Size = null, string? Sha256 = null);

public sealed record PartResult(int Part, int Chunks, IReadOnlyList<int> Missing);

public sealed record ChunksResult(int Received, long NewBytes, int MissingCount, long MissingBytes);

public sealed record PushStatus(string UploadId, string? Digest, long Size, IReadOnlyList<string> Missing, long MissingBytes, DateTimeOffset ExpiresAt);
