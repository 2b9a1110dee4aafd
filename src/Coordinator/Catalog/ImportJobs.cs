using System.Net;
using System.Text.Json;
using Dapper;
using MsdFleet.Coordinator.State;
using System.Net.Http.Headers;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// Imports from a URL run as jobs: the download streams straight into the ingestor (constant memory),
/// resumes with <c>Range</c> + <c>If-Range</c> after a broken connection, verifies TLS certificates
/// (no opt-out), and commits to the catalog only after the optional expected SHA-256 matched.
/// Jobs are rows in <c>import_jobs</c> (listed, cancellable, visible on every replica) and run on the
/// leader; a job whose replica died or restarted is queued again and runs from the start — chunks it had
/// already stored are deduplicated, so only the download is repeated.
/// </summary>
public sealed partial class ImportJobs(ImageIngestor ingestor, ImageCatalog catalog, Storage.StoreGate gate, StateDatabase db, LeaderLease leader,
    TimeProvider time, ILogger<ImportJobs> logger) : BackgroundService
{
    private const int MaxResumes = 8;
    /// <summary>A running job whose runner has not reported for this long is taken as orphaned (its replica died) and queued again.</summary>
    private static readonly TimeSpan OrphanAfter = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan HeartbeatEvery = TimeSpan.FromSeconds(1);
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly SemaphoreSlim _wake = new(0);
    private readonly HttpClient _http = new(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(15), AutomaticDecompression = DecompressionMethods.None })
    {
        Timeout = Timeout.InfiniteTimeSpan,
    };

    /// <summary>Checks the request, records the job as queued and wakes the runner; the leader runs it.</summary>
    public async Task<JobView> StartAsync(ImportRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (!Uri.TryCreate(request.Url, UriKind.Absolute, out var url) || url.Scheme is not ("http" or "https"))
            throw ApiException.BadRequest("invalid-url", "url must be an absolute http:// or https:// URL.");
        if (!NameRules.TryValidateImageName(request.Name, out var error))
            throw ApiException.BadRequest("invalid-image-name", error);
        if (request.Sha256 is not null && (request.Sha256.Length != 64 || !request.Sha256.All(char.IsAsciiHexDigit)))
            throw ApiException.BadRequest("invalid-sha256", "sha256 must be 64 hexadecimal characters.");
        if (request.Replace != true && await catalog.GetAsync(request.Name, cancellationToken) is not null)
            throw ImageCatalog.ImageExists(request.Name);
        var id = Guid.NewGuid().ToString("N");
        await db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition($"""
            INSERT INTO import_jobs (id, url, name, sha256, replace_existing, state, created_at_ms, heartbeat_at_ms)
            VALUES (@id, @url, @name, @sha256, @replace, 'queued', @now, {db.NowMs})
            """, new { id, url = url.ToString(), name = request.Name, sha256 = request.Sha256?.ToLowerInvariant(), replace = request.Replace == true ? 1 : 0,
                  now = time.GetUtcNow().ToUnixTimeMilliseconds() }, t, cancellationToken: cancellationToken)), cancellationToken);
        _wake.Release();
        return (await GetAsync(id, cancellationToken))!;
    }

    public async Task<JobView?> GetAsync(string id, CancellationToken cancellationToken) =>
        (await db.ReadAsync(c => c.QueryAsync<JobRow>(new CommandDefinition($"{SelectJobs} WHERE id = @id", new { id }, cancellationToken: cancellationToken)), cancellationToken))
        .Select(View).FirstOrDefault();

    /// <summary>Jobs newest first; <paramref name="before"/> (a creation time in Unix ms) pages to older ones.</summary>
    public async Task<IReadOnlyList<JobView>> ListAsync(int limit, long? before, CancellationToken cancellationToken) =>
        (await db.ReadAsync(c => c.QueryAsync<JobRow>(new CommandDefinition(
            $"{SelectJobs} WHERE (@before IS NULL OR created_at_ms < @before) ORDER BY created_at_ms DESC, id LIMIT @limit",
            new { before, limit }, cancellationToken: cancellationToken)), cancellationToken)).Select(View).ToList();

    /// <summary>Cancels a queued or running job (the runner sees it at its next heartbeat); null when unknown, the view when it had already ended.</summary>
    public async Task<(JobView Job, bool Cancelled)?> CancelAsync(string id, CancellationToken cancellationToken)
    {
        var changed = await db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition(
            "UPDATE import_jobs SET state = 'cancelled', error = 'cancelled by request' WHERE id = @id AND state IN ('queued', 'running')",
            new { id }, t, cancellationToken: cancellationToken)), cancellationToken);
        return await GetAsync(id, cancellationToken) is { } job ? (job, changed > 0) : null;
    }

    private const string SelectJobs =
        "SELECT id AS Id, url AS Url, name AS Name, sha256 AS Sha256, CAST(replace_existing AS BIGINT) AS ReplaceExisting, state AS State, bytes_done AS BytesDone, " +
        "bytes_total AS BytesTotal, error AS Error, image AS Image, created_at_ms AS CreatedAtMs FROM import_jobs";

    private sealed record JobRow(string Id, string Url, string Name, string? Sha256, long ReplaceExisting, string State, long BytesDone, long? BytesTotal,
        string? Error, string? Image, long CreatedAtMs);

    private static JobView View(JobRow row) => new(row.Id, "import", row.State, new Uri(row.Url).GetLeftPart(UriPartial.Path), row.Name, row.BytesDone, row.BytesTotal,
        row.Error, row.Image is null ? null : JsonSerializer.Deserialize<CatalogEntry>(row.Image, Json), DateTimeOffset.FromUnixTimeMilliseconds(row.CreatedAtMs));

    /// <summary>
    /// The runner, on the leader only: re-queues jobs whose runner stopped reporting (a replica died, or
    /// this one restarted), then takes queued jobs one at a time — one <c>UPDATE … RETURNING</c> claims a job,
    /// so no two replicas run it.
    /// </summary>
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await leader.FirstRound.WaitAsync(stoppingToken);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                if (leader.IsLeader)
                {
                    await db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition(
                        $"UPDATE import_jobs SET state = 'queued', runner = NULL WHERE state = 'running' AND heartbeat_at_ms < {db.NowMs} - @orphan",
                        new { orphan = (long)OrphanAfter.TotalMilliseconds }, t, cancellationToken: stoppingToken)), stoppingToken);
                    while (leader.IsLeader && await ClaimAsync(stoppingToken) is { } job)
                        await RunAsync(job, stoppingToken);
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !stoppingToken.IsCancellationRequested)
            {
                Log.RunnerFailed(logger, ex.Message);
            }
            try
            {
                await _wake.WaitAsync(TimeSpan.FromSeconds(2), stoppingToken);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task<JobRow?> ClaimAsync(CancellationToken cancellationToken) =>
        await db.WriteAsync((c, t) => c.QuerySingleOrDefaultAsync<JobRow>(new CommandDefinition($"""
            UPDATE import_jobs SET state = 'running', runner = @holder, bytes_done = 0, heartbeat_at_ms = {db.NowMs}
            WHERE id = (SELECT id FROM import_jobs WHERE state = 'queued' ORDER BY created_at_ms LIMIT 1)
              AND state = 'queued'
            RETURNING id AS Id, url AS Url, name AS Name, sha256 AS Sha256, CAST(replace_existing AS BIGINT) AS ReplaceExisting, state AS State,
                      bytes_done AS BytesDone, bytes_total AS BytesTotal, error AS Error, image AS Image, created_at_ms AS CreatedAtMs
            """, new { holder = leader.Holder }, t, cancellationToken: cancellationToken)), cancellationToken);

    private async Task RunAsync(JobRow row, CancellationToken stoppingToken)
    {
        var job = new ImportJob(row.Id, new Uri(row.Url), row.Name, DateTimeOffset.FromUnixTimeMilliseconds(row.CreatedAtMs));
        using var run = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        var heartbeat = HeartbeatAsync(job, run);
        string state, error = "";
        CatalogEntry? entry = null;
        try
        {
            await using var source = new ResumingDownload(_http, job, logger);
            await using var lease = await gate.EnterSharedAsync(run.Token); // until the catalog entry exists
            var result = await ingestor.IngestAsync(source, row.Sha256, run.Token);
            entry = CatalogEntry.For(job.Name, result.Digest, result.Manifest, result.Media, time.GetUtcNow());
            run.Token.ThrowIfCancellationRequested(); // cancelled: the catalog stays as it was
            await catalog.CommitAsync(entry, row.ReplaceExisting != 0, CancellationToken.None);
            state = "succeeded";
            Log.Imported(logger, job.Id, job.Url.GetLeftPart(UriPartial.Path), entry.Digest);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            return; // this replica is stopping: the job stays "running" until the next leader re-queues it
        }
        catch (OperationCanceledException)
        {
            return; // cancelled by request (or taken over): the row already says so
        }
        catch (Exception ex)
        {
            state = "failed";
            error = ex switch
            {
                ApiException api => api.Message,
                HttpRequestException { InnerException: System.Security.Authentication.AuthenticationException } =>
                    $"TLS verification of {job.Url.Host} failed: {ex.InnerException!.Message}",
                _ => ex.Message,
            };
            Log.ImportFailed(logger, job.Id, error);
        }
        finally
        {
            await run.CancelAsync();
            await heartbeat;
        }
        await db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition(
            "UPDATE import_jobs SET state = @state, error = @error, image = @image, bytes_done = @done, bytes_total = @total WHERE id = @id AND runner = @holder AND state = 'running'",
            new { id = job.Id, holder = leader.Holder, state, error = state == "failed" ? error : null, image = entry is null ? null : JsonSerializer.Serialize(entry, Json),
                  done = job.BytesDone, total = job.BytesTotal }, t, cancellationToken: CancellationToken.None)), CancellationToken.None);
    }

    /// <summary>Every second: progress into the row, and a look at whether the job is still this runner's to run (cancel, take-over).</summary>
    private async Task HeartbeatAsync(ImportJob job, CancellationTokenSource run)
    {
        try
        {
            while (!run.IsCancellationRequested)
            {
                await Task.Delay(HeartbeatEvery, run.Token);
                var mine = await db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition(
                    $"UPDATE import_jobs SET bytes_done = @done, bytes_total = @total, heartbeat_at_ms = {db.NowMs} WHERE id = @id AND runner = @holder AND state = 'running'",
                    new { id = job.Id, holder = leader.Holder, done = job.BytesDone, total = job.BytesTotal }, t, cancellationToken: run.Token)), run.Token);
                if (mine == 0)
                {
                    Log.Cancelled(logger, job.Id);
                    await run.CancelAsync();
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception ex) when (ex is System.Data.Common.DbException or TimeoutException)
        {
            Log.RunnerFailed(logger, ex.Message); // the job goes on; the row catches up at its end
        }
    }

    public override void Dispose()
    {
        _http.Dispose();
        _wake.Dispose();
        base.Dispose();
    }

    private sealed class ResumingDownload(HttpClient http, ImportJob job, ILogger logger) : Storage.ReadOnlyStream
    {
        private HttpResponseMessage? _response;
        private Stream? _body;
        private EntityTagHeaderValue? _etag;
        private DateTimeOffset? _lastModified;
        private int _resumes;

        public override long Position { get => job.BytesDone; set => throw new NotSupportedException(); }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            while (true)
            {
                try
                {
                    _body ??= await OpenAsync(cancellationToken);
                    var read = await _body.ReadAsync(buffer, cancellationToken);
                    if (read == 0 && job.BytesTotal is { } total && job.BytesDone < total)
                        throw new IOException($"The connection closed at {job.BytesDone} of {total} bytes.");
                    job.Add(read);
                    return read;
                }
                catch (Exception ex) when (ex is IOException or HttpRequestException && _resumes < MaxResumes && !cancellationToken.IsCancellationRequested
                                           && !(ex is HttpRequestException { InnerException: System.Security.Authentication.AuthenticationException }))
                {
                    _resumes++;
                    Log.Resuming(logger, job.Id, job.BytesDone, ex.Message);
                    CloseResponse();
                    await Task.Delay(TimeSpan.FromMilliseconds(250 * Math.Pow(2, _resumes - 1)), cancellationToken);
                }
            }
        }

        private async Task<Stream> OpenAsync(CancellationToken cancellationToken)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, job.Url);
            var resuming = job.BytesDone > 0;
            if (resuming)
            {
                request.Headers.Range = new RangeHeaderValue(job.BytesDone, null);
                if (_etag is not null)
                    request.Headers.IfRange = new RangeConditionHeaderValue(_etag);
                else if (_lastModified is { } modified)
                    request.Headers.IfRange = new RangeConditionHeaderValue(modified);
            }
            _response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
            if (!_response.IsSuccessStatusCode)
                throw new ApiException(StatusCodes.Status502BadGateway, "import-source-error", $"{job.Url.GetLeftPart(UriPartial.Path)} answered HTTP {(int)_response.StatusCode}.");
            if (resuming && _response.StatusCode != HttpStatusCode.PartialContent)
                throw new ApiException(StatusCodes.Status502BadGateway, "import-source-changed",
                    "The source did not resume the download (it ignores Range or the file changed); nothing was imported.");
            if (!resuming)
            {
                _etag = _response.Headers.ETag is { IsWeak: false } etag ? etag : null;
                _lastModified = _response.Content.Headers.LastModified;
                job.BytesTotal = _response.Content.Headers.ContentLength;
            }
            return await _response.Content.ReadAsStreamAsync(cancellationToken);
        }

        private void CloseResponse()
        {
            _body?.Dispose();
            _response?.Dispose();
            _body = null;
            _response = null;
        }

        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                CloseResponse();
            base.Dispose(disposing);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Import {JobId} of {Url} stored as {Digest}")]
        public static partial void Imported(ILogger logger, string jobId, string url, string digest);

        [LoggerMessage(2, LogLevel.Warning, "Import {JobId} failed: {Reason}")]
        public static partial void ImportFailed(ILogger logger, string jobId, string reason);

        [LoggerMessage(3, LogLevel.Information, "Import {JobId} resuming at byte {Offset} after: {Reason}")]
        public static partial void Resuming(ILogger logger, string jobId, long offset, string reason);

        [LoggerMessage(4, LogLevel.Information, "Import {JobId} stopped: it was cancelled or is no longer this replica's")]
        public static partial void Cancelled(ILogger logger, string jobId);

        [LoggerMessage(5, LogLevel.Warning, "Import runner: {Reason}; retrying")]
        public static partial void RunnerFailed(ILogger logger, string reason);
    }
}

public sealed record ImportRequest(string? Url, string? Name, string? Sha256, bool? Replace);

/// <summary>The progress of the job this replica is running (the row in <c>import_jobs</c> is the record).</summary>
public sealed class ImportJob(string id, Uri url, string name, DateTimeOffset createdAt)
{
    private long _done;

    public string Id { get; } = id;
    public Uri Url { get; } = url;
    public string Name { get; } = name;
    public DateTimeOffset CreatedAt { get; } = createdAt;
    public long BytesDone => Interlocked.Read(ref _done);
    public long? BytesTotal { get; set; }

    public void Add(long bytes) => Interlocked.Add(ref _done, bytes);
}
