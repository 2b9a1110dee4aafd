using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// Imports from a URL run as jobs: the download streams straight into the ingestor (constant memory),
/// resumes with <c>Range</c> + <c>If-Range</c> after a broken connection, verifies TLS certificates
/// (no opt-out), and commits to the catalog only after the optional expected SHA-256 matched.
/// Jobs live in memory; a Coordinator restart forgets running imports (they left nothing in the catalog).
/// </summary>
public sealed partial class ImportJobs(ImageIngestor ingestor, ImageCatalog catalog, Storage.StoreGate gate, TimeProvider time, ILogger<ImportJobs> logger) : IDisposable
{
    private const int MaxResumes = 8;
    private readonly ConcurrentDictionary<string, ImportJob> _jobs = new(StringComparer.Ordinal);
    private readonly HttpClient _http = new(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(15), AutomaticDecompression = DecompressionMethods.None })
    {
        Timeout = Timeout.InfiniteTimeSpan,
    };

    public ImportJob? Get(string id) => _jobs.GetValueOrDefault(id);

    public async Task<ImportJob> StartAsync(ImportRequest request, CancellationToken cancellationToken)
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
        var job = new ImportJob(Guid.NewGuid().ToString("N"), url, request.Name, time.GetUtcNow());
        _jobs[job.Id] = job;
        _ = Task.Run(() => RunAsync(job, request), CancellationToken.None);
        return job;
    }

    private async Task RunAsync(ImportJob job, ImportRequest request)
    {
        try
        {
            await using var source = new ResumingDownload(_http, job, logger);
            await using var lease = await gate.EnterSharedAsync(CancellationToken.None); // until the catalog entry exists
            var result = await ingestor.IngestAsync(source, request.Sha256, CancellationToken.None);
            var entry = CatalogEntry.For(job.Name, result.Digest, result.Manifest, result.Media, time.GetUtcNow());
            await catalog.CommitAsync(entry, request.Replace == true, CancellationToken.None);
            job.Complete(entry);
            Log.Imported(logger, job.Id, job.Url.GetLeftPart(UriPartial.Path), entry.Digest);
        }
        catch (Exception ex)
        {
            job.Fail(ex switch
            {
                ApiException api => api.Message,
                HttpRequestException { InnerException: System.Security.Authentication.AuthenticationException } =>
                    $"TLS verification of {job.Url.Host} failed: {ex.InnerException!.Message}",
                _ => ex.Message,
            });
            Log.ImportFailed(logger, job.Id, job.Error!);
        }
    }

    public void Dispose() => _http.Dispose();

    /// <summary>A read-only stream over a URL that reconnects with Range where the last read stopped.</summary>
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
    }
}

public sealed record ImportRequest(string? Url, string? Name, string? Sha256, bool? Replace);

public sealed class ImportJob(string id, Uri url, string name, DateTimeOffset createdAt)
{
    private long _done;

    public string Id { get; } = id;
    public string Kind => "import";
    public Uri Url { get; } = url;
    public string Name { get; } = name;
    public DateTimeOffset CreatedAt { get; } = createdAt;
    public string State { get; private set; } = "running";
    public long BytesDone => Interlocked.Read(ref _done);
    public long? BytesTotal { get; set; }
    public string? Error { get; private set; }
    public CatalogEntry? Image { get; private set; }

    public void Add(long bytes) => Interlocked.Add(ref _done, bytes);

    public void Complete(CatalogEntry entry)
    {
        Image = entry;
        State = "succeeded";
    }

    public void Fail(string error)
    {
        Error = error;
        State = "failed";
    }
}
