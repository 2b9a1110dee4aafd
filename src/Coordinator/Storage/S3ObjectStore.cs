using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Options;
using Minio;
using Minio.DataModel.Args;
using Minio.Exceptions;

namespace MsdFleet.Coordinator.Storage;

/// <summary>
/// Objects in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, Swift s3api). Metadata calls go
/// through the Minio SDK; object bytes move through presigned URLs with our own HttpClient: one PUT
/// per object (no SDK part buffering) and ranged GETs (the 7.0.0 SDK treats 206 as an error). Every
/// put replaces a whole object, so all calls are idempotent and retried with back-off on transient
/// failures; an unreachable store surfaces as <see cref="ObjectStoreUnavailableException"/> (503).
/// </summary>
public sealed partial class S3ObjectStore : IObjectStore, IDisposable
{
    private const int Attempts = 5;
    private readonly S3StoreOptions _options;
    private readonly IMinioClient _minio;
    private readonly IMinioClient _agentMinio;
    private readonly HttpClient _http;
    private readonly ILogger<S3ObjectStore> _logger;

    public S3ObjectStore(IOptions<ObjectStoreOptions> options, ILogger<S3ObjectStore> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Value.S3;
        _logger = logger;
        _minio = NewClient(_options.Endpoint!);
        // Presigning is local (with the region set, the client asks the server nothing): a second client only
        // signs agents' URLs for the host they can reach.
        _agentMinio = _options.PublicEndpoint is { } publicEndpoint ? NewClient(publicEndpoint) : _minio;
        _http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 32, PooledConnectionLifetime = TimeSpan.FromMinutes(5) })
        {
            Timeout = TimeSpan.FromMinutes(10),
        };
    }

    public bool IsRemote => true;

    /// <summary>Checks the endpoint, credentials and bucket at start; failures name the setting to fix.</summary>
    public async Task CheckAsync(CancellationToken cancellationToken)
    {
        bool exists;
        try
        {
            exists = await RetryAsync(() => _minio.BucketExistsAsync(new BucketExistsArgs().WithBucket(_options.Bucket), cancellationToken), cancellationToken);
        }
        catch (Exception ex) when (IsAuthFailure(ex))
        {
            throw new InvalidOperationException(
                $"The S3 endpoint {_options.Endpoint} rejected the credentials: check Storage:S3:AccessKey and Storage:S3:SecretKey. ({ex.Message})", ex);
        }
        catch (ObjectStoreUnavailableException ex)
        {
            throw new InvalidOperationException($"The S3 endpoint {_options.Endpoint} is unreachable: check Storage:S3:Endpoint. ({ex.Message})", ex);
        }
        if (!exists)
        {
            if (!_options.CreateBucket)
                throw new InvalidOperationException($"The bucket '{_options.Bucket}' does not exist: create it or set Storage:S3:CreateBucket=true.");
            await RetryAsync(async () =>
            {
                await _minio.MakeBucketAsync(new MakeBucketArgs().WithBucket(_options.Bucket), cancellationToken);
                return true;
            }, cancellationToken);
        }
        // A signed round trip proves the secret too (some servers answer bucket HEADs anonymously).
        var probe = ".msdfleet-probe";
        await PutAsync(probe, "ok"u8.ToArray(), cancellationToken);
        if (await GetSizeAsync(probe, cancellationToken) != 2)
            throw new InvalidOperationException($"The S3 endpoint {_options.Endpoint} did not store a probe object; check Storage:S3:*.");
    }

    public Task<long?> GetSizeAsync(string key, CancellationToken cancellationToken) =>
        RetryAsync(async () =>
        {
            try
            {
                var stat = await _minio.StatObjectAsync(new StatObjectArgs().WithBucket(_options.Bucket).WithObject(FullKey(key)), cancellationToken);
                return (long?)stat.Size;
            }
            catch (Exception ex) when (ex is ObjectNotFoundException or BucketNotFoundException)
            {
                return null;
            }
        }, cancellationToken);

    public Task PutAsync(string key, ReadOnlyMemory<byte> content, CancellationToken cancellationToken) =>
        RetryAsync(async () =>
        {
            var url = await PresignAsync(key, put: true);
            using var request = new HttpRequestMessage(HttpMethod.Put, url) { Content = new ReadOnlyMemoryContent(content) };
            using var response = await _http.SendAsync(request, cancellationToken);
            await EnsureSuccessAsync(response, "PUT", key, cancellationToken);
            return true;
        }, cancellationToken);

    public async Task<Stream?> OpenReadAsync(string key, long offset, CancellationToken cancellationToken)
    {
        return await RetryAsync(async () =>
        {
            var url = await PresignAsync(key, put: false);
            var request = new HttpRequestMessage(HttpMethod.Get, url);
            if (offset > 0)
                request.Headers.Range = new System.Net.Http.Headers.RangeHeaderValue(offset, null);
            var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
            if (response.StatusCode == HttpStatusCode.NotFound)
            {
                response.Dispose();
                request.Dispose();
                return null;
            }
            if (offset > 0 && response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)
            {
                response.Dispose();
                request.Dispose();
                return Stream.Null;
            }
            await EnsureSuccessAsync(response, "GET", key, cancellationToken);
            if (offset > 0 && response.StatusCode != HttpStatusCode.PartialContent)
                throw new ObjectStoreUnavailableException($"The S3 endpoint ignored a Range request for '{key}'.");
            return (Stream?)new ResponseStream(await response.Content.ReadAsStreamAsync(cancellationToken), response, request);
        }, cancellationToken);
    }

    public Task<bool> DeleteAsync(string key, CancellationToken cancellationToken) =>
        RetryAsync(async () =>
        {
            if (await GetSizeAsync(key, cancellationToken) is null)
                return false;
            await _minio.RemoveObjectAsync(new RemoveObjectArgs().WithBucket(_options.Bucket).WithObject(FullKey(key)), cancellationToken);
            return true;
        }, cancellationToken);

    public async IAsyncEnumerable<string> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var full = FullKey(prefix);
        var items = _minio.ListObjectsEnumAsync(new ListObjectsArgs().WithBucket(_options.Bucket).WithPrefix(full).WithRecursive(true), cancellationToken);
        await using var enumerator = items.GetAsyncEnumerator(cancellationToken);
        while (true)
        {
            bool next;
            try
            {
                next = await enumerator.MoveNextAsync();
            }
            catch (Exception ex) when (IsTransient(ex))
            {
                throw new ObjectStoreUnavailableException($"Listing '{prefix}' in the S3 store failed: {ex.Message}", ex);
            }
            if (!next)
                yield break;
            if (!enumerator.Current.IsDir)
                yield return enumerator.Current.Key[_options.Prefix.Length..];
        }
    }

    /// <summary>S3 puts are durable when they return.</summary>
    public Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>A short-lived URL an agent can GET (with Range) straight from the store, on its public endpoint if one is set.</summary>
    public Task<string> PresignGetAsync(string key) =>
        _agentMinio.PresignedGetObjectAsync(new PresignedGetObjectArgs().WithBucket(_options.Bucket).WithObject(FullKey(key))
            .WithExpiry((int)_options.PresignedUrlLifetime.TotalSeconds));

    private IMinioClient NewClient(Uri endpoint) => new MinioClient()
        .WithEndpoint(endpoint.Host, endpoint.Port)
        .WithCredentials(_options.AccessKey, _options.SecretKey)
        .WithSSL(endpoint.Scheme == "https")
        .WithRegion(_options.Region)
        .Build();

    public void Dispose()
    {
        _http.Dispose();
        if (!ReferenceEquals(_agentMinio, _minio))
            (_agentMinio as IDisposable)?.Dispose();
        (_minio as IDisposable)?.Dispose();
    }

    private string FullKey(string key)
    {
        if (key.Length == 0 || key.Contains("..", StringComparison.Ordinal) || key.StartsWith('/') || key.Contains('\\', StringComparison.Ordinal))
            throw new ArgumentException($"Invalid object key '{key}'.", nameof(key));
        return _options.Prefix + key;
    }

    private Task<string> PresignAsync(string key, bool put)
    {
        var expiry = (int)_options.PresignedUrlLifetime.TotalSeconds;
        return put
            ? _minio.PresignedPutObjectAsync(new PresignedPutObjectArgs().WithBucket(_options.Bucket).WithObject(FullKey(key)).WithExpiry(expiry))
            : _minio.PresignedGetObjectAsync(new PresignedGetObjectArgs().WithBucket(_options.Bucket).WithObject(FullKey(key)).WithExpiry(expiry));
    }

    private async Task<T> RetryAsync<T>(Func<Task<T>> operation, CancellationToken cancellationToken)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await operation();
            }
            catch (Exception ex) when (IsTransient(ex) && !cancellationToken.IsCancellationRequested)
            {
                if (attempt >= Attempts)
                    throw new ObjectStoreUnavailableException($"The S3 store is unavailable: {ex.Message}", ex);
                Log.Retrying(_logger, attempt, ex.Message);
                await Task.Delay(TimeSpan.FromMilliseconds(200 * Math.Pow(2, attempt - 1)), cancellationToken);
            }
        }
    }

    private static async Task EnsureSuccessAsync(HttpResponseMessage response, string verb, string key, CancellationToken cancellationToken)
    {
        if (response.IsSuccessStatusCode)
            return;
        var body = await response.Content.ReadAsStringAsync(cancellationToken);
        var message = $"S3 {verb} of '{key}' failed with HTTP {(int)response.StatusCode}: {(body.Length > 300 ? body[..300] : body)}";
        if ((int)response.StatusCode >= 500)
            throw new HttpRequestException(message, null, response.StatusCode);
        throw new InvalidOperationException(message);
    }

    private static bool IsTransient(Exception ex) =>
        ex is HttpRequestException { StatusCode: null or >= HttpStatusCode.InternalServerError } or SocketException or ConnectionException or TaskCanceledException { InnerException: TimeoutException }
        || ex.InnerException is SocketException or HttpRequestException
        // S3's "slow down" and 5xx answers surface from the SDK as plain MinioExceptions.
        || (ex is MinioException && (ex.Message.Contains("reduce your request rate", StringComparison.OrdinalIgnoreCase)
            || ex.Message.Contains("SlowDown", StringComparison.Ordinal) || ex.Message.Contains("ServiceUnavailable", StringComparison.Ordinal)
            || ex.Message.Contains("InternalError", StringComparison.Ordinal)));

    private static bool IsAuthFailure(Exception ex) =>
        ex is AuthorizationException or AccessDeniedException || ex.Message.Contains("SignatureDoesNotMatch", StringComparison.Ordinal)
        || ex.Message.Contains("AccessDenied", StringComparison.Ordinal) || ex.Message.Contains("InvalidAccessKeyId", StringComparison.Ordinal)
        || ex.Message.Contains("403", StringComparison.Ordinal);

    /// <summary>Keeps the HTTP response alive as long as its body is being read.</summary>
    private sealed class ResponseStream(Stream inner, HttpResponseMessage response, HttpRequestMessage request) : ReadOnlyStream
    {
        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => inner.ReadAsync(buffer, cancellationToken);

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                inner.Dispose();
                response.Dispose();
                request.Dispose();
            }
            base.Dispose(disposing);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "S3 call failed (attempt {Attempt}): {Reason}; retrying")]
        public static partial void Retrying(ILogger logger, int attempt, string reason);
    }
}
