using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;
using MsdFleet.IntegrationTests.Infrastructure;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.IntegrationTests;

/// <summary>The client-side push protocol, and import from a URL that breaks mid-download.</summary>
public sealed class PushAndImportTests : IAsyncLifetime
{
    private readonly string _work = TestPaths.NewTempDir("push-import");
    private CoordinatorInstance _coordinator = null!;

    public async Task InitializeAsync() => _coordinator = await CoordinatorInstance.StartAsync();

    public async Task DisposeAsync()
    {
        await _coordinator.DisposeAsync();
        Directory.Delete(_work, true);
    }

    private static async Task<(ImageManifest Manifest, List<byte[]> Chunks)> ChunkLocallyAsync(byte[] data)
    {
        var chunker = new ContentChunker(ChunkerParameters.Default);
        var chunks = new List<byte[]>();
        await foreach (var chunk in StreamChunker.ReadChunksAsync(new MemoryStream(data), chunker))
            chunks.Add(chunk.ToArray());
        var manifest = new ImageManifest
        {
            Size = data.Length,
            Sha256 = SHA256.HashData(data),
            Chunker = ChunkerParameters.Default,
            Chunks = chunks.Select(c => new ManifestChunk { Id = SHA256.HashData(c), Length = c.Length }).ToList(),
        };
        return (manifest, chunks);
    }

    private static ByteArrayContent Frames(IEnumerable<byte[]> chunks)
    {
        var body = new MemoryStream();
        foreach (var chunk in chunks)
        {
            var header = new byte[4];
            BinaryPrimitives.WriteInt32BigEndian(header, chunk.Length);
            body.Write(header);
            body.Write(chunk);
        }
        return new ByteArrayContent(body.ToArray());
    }

    [Fact]
    public async Task Push_Interrupted_ResumesSendingOnlyMissingChunks()
    {
        var data = new byte[6 * 1024 * 1024];
        new Random(41).NextBytes(data);
        var (manifest, chunks) = await ChunkLocallyAsync(data);

        using var create = await _coordinator.Http.PostAsync("api/v1/uploads", new ByteArrayContent(manifest.ToBytes()));
        Assert.Equal(HttpStatusCode.Created, create.StatusCode);
        var session = JsonNode.Parse(await create.Content.ReadAsStringAsync())!;
        var id = session["uploadId"]!.GetValue<string>();
        Assert.Equal(chunks.Count, session["missing"]!.AsArray().Count);

        // First half, then the "connection breaks".
        var half = chunks.Count / 2;
        using (var first = await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/chunks", Frames(chunks.Take(half))))
            Assert.True(first.IsSuccessStatusCode, await first.Content.ReadAsStringAsync());
        using (var early = await _coordinator.Http.PostAsJsonAsync($"api/v1/uploads/{id}/commit", new { name = "pushed.img" }))
            Assert.Equal(HttpStatusCode.Conflict, early.StatusCode);

        var status = JsonNode.Parse(await _coordinator.Http.GetStringAsync($"api/v1/uploads/{id}"))!;
        var missing = status["missing"]!.AsArray().Select(m => m!.GetValue<string>()).ToHashSet();
        Assert.Equal(chunks.Skip(half).Select(c => Convert.ToHexStringLower(SHA256.HashData(c))).ToHashSet(), missing);

        using (var rest = await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/chunks",
                   Frames(chunks.Where(c => missing.Contains(Convert.ToHexStringLower(SHA256.HashData(c)))))))
        {
            var body = JsonNode.Parse(await rest.Content.ReadAsStringAsync())!;
            Assert.Equal(data.Length - chunks.Take(half).Sum(c => c.Length), body["newBytes"]!.GetValue<long>());
        }
        using var commit = await _coordinator.Http.PostAsJsonAsync($"api/v1/uploads/{id}/commit", new { name = "pushed.img" });
        Assert.Equal(HttpStatusCode.Created, commit.StatusCode);
        Assert.Equal(ImageDigest.Compute(manifest.ToBytes()).ToString(), JsonNode.Parse(await commit.Content.ReadAsStringAsync())!["digest"]!.GetValue<string>());
        Assert.Equal(data, await _coordinator.Http.GetByteArrayAsync("api/v1/images/pushed.img"));
        Assert.Equal(HttpStatusCode.NotFound, (await _coordinator.Http.GetAsync($"api/v1/uploads/{id}")).StatusCode);
    }

    [Fact]
    public async Task Push_ChunkNotInManifestOrBadFrame_Rejected()
    {
        var data = new byte[300_000];
        new Random(42).NextBytes(data);
        var (manifest, _) = await ChunkLocallyAsync(data);
        using var create = await _coordinator.Http.PostAsync("api/v1/uploads", new ByteArrayContent(manifest.ToBytes()));
        var id = JsonNode.Parse(await create.Content.ReadAsStringAsync())!["uploadId"]!.GetValue<string>();
        using (var foreign = await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/chunks", Frames([new byte[1000]])))
            Assert.Contains("unexpected-chunk", await foreign.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        // More foreign chunks than the receiver's batches in flight: refused, not stuck with every batch held.
        var many = Enumerable.Range(0, 160).Select(i => { var c = new byte[64 * 1024]; new Random(i).NextBytes(c); return c; }).ToList();
        // (Before the fix the request hung. The answer may come before the whole body was sent; then the client sees
        // the connection closed under it instead of reading the 400.)
        try
        {
            using var flood = await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/chunks", Frames(many)).WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Contains("unexpected-chunk", await flood.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
        catch (HttpRequestException)
        {
        }
        Assert.Equal(HttpStatusCode.OK, (await _coordinator.Http.GetAsync($"api/v1/uploads/{id}")).StatusCode);
        using (var truncated = await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/chunks", new ByteArrayContent([0, 0, 1, 0, 1, 2])))
            Assert.Contains("invalid-frame", await truncated.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        using (var garbage = await _coordinator.Http.PostAsync("api/v1/uploads", new ByteArrayContent([0xc1, 0x00])))
            Assert.Contains("invalid-manifest", await garbage.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Push_ManifestWithWrongWholeImageSha_RefusedAtCommit()
    {
        var data = new byte[400_000];
        new Random(7).NextBytes(data);
        var (manifest, chunks) = await ChunkLocallyAsync(data);
        var lying = manifest with { Sha256 = Enumerable.Repeat((byte)1, 32).ToArray() };
        using var create = await _coordinator.Http.PostAsync("api/v1/uploads", new ByteArrayContent(lying.ToBytes()));
        var id = JsonNode.Parse(await create.Content.ReadAsStringAsync())!["uploadId"]!.GetValue<string>();
        (await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/chunks", Frames(chunks))).EnsureSuccessStatusCode();
        using var commit = await _coordinator.Http.PostAsJsonAsync($"api/v1/uploads/{id}/commit", new { name = "lying.img" });
        Assert.Equal(HttpStatusCode.UnprocessableEntity, commit.StatusCode);
        Assert.Contains("sha256-mismatch", await commit.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.NotFound, (await _coordinator.Http.GetAsync("api/v1/images/lying.img")).StatusCode);

        // 32 zero bytes: "compute it for me" (the browser's way); the catalog gets the real SHA-256.
        var unknown = manifest with { Sha256 = new byte[32] };
        using var create2 = await _coordinator.Http.PostAsync("api/v1/uploads", new ByteArrayContent(unknown.ToBytes()));
        var id2 = JsonNode.Parse(await create2.Content.ReadAsStringAsync())!["uploadId"]!.GetValue<string>();
        using var commit2 = await _coordinator.Http.PostAsJsonAsync($"api/v1/uploads/{id2}/commit", new { name = "computed.img" });
        var entry = JsonNode.Parse(await commit2.Content.ReadAsStringAsync())!;
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(data)), entry["sha256"]!.GetValue<string>());
    }

    /// <summary>
    /// The Coordinator hashes the whole image as chunks arrive in image order and reads back only the rest at
    /// commit: batches that overtake each other (the second half first) still commit the right SHA-256, and a
    /// lying SHA-256 is still refused when most of the image was hashed from the store, not on arrival. A second
    /// push of a manifest the store already holds (verified at its first commit) commits without sending a byte.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Push_BatchesOutOfOrder_WholeImageStillVerified(bool lie)
    {
        var data = new byte[5 * 1024 * 1024 + 77];
        new Random(lie ? 71 : 72).NextBytes(data);
        var (manifest, chunks) = await ChunkLocallyAsync(data);
        var sent = lie ? manifest with { Sha256 = SHA256.HashData(data.AsSpan(1)) } : manifest;
        using var create = await _coordinator.Http.PostAsync("api/v1/uploads", new ByteArrayContent(sent.ToBytes()));
        var id = JsonNode.Parse(await create.Content.ReadAsStringAsync())!["uploadId"]!.GetValue<string>();
        var half = chunks.Count / 2;
        (await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/chunks", Frames(chunks.Skip(half)))).EnsureSuccessStatusCode();
        (await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/chunks", Frames(chunks.Take(half)))).EnsureSuccessStatusCode();
        var name = lie ? "overtaken-lying.img" : "overtaken.img";
        using var commit = await _coordinator.Http.PostAsJsonAsync($"api/v1/uploads/{id}/commit", new { name });
        if (lie)
        {
            Assert.Equal(HttpStatusCode.UnprocessableEntity, commit.StatusCode);
            Assert.Contains("sha256-mismatch", await commit.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            Assert.Equal(HttpStatusCode.NotFound, (await _coordinator.Http.GetAsync($"api/v1/images/{name}")).StatusCode);
            return;
        }
        Assert.Equal(HttpStatusCode.Created, commit.StatusCode);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(data)), JsonNode.Parse(await commit.Content.ReadAsStringAsync())!["sha256"]!.GetValue<string>());
        Assert.Equal(data, await _coordinator.Http.GetByteArrayAsync($"api/v1/images/{name}"));

        using var again = await _coordinator.Http.PostAsync("api/v1/uploads", new ByteArrayContent(manifest.ToBytes()));
        var status = JsonNode.Parse(await again.Content.ReadAsStringAsync())!;
        Assert.Empty(status["missing"]!.AsArray());
        using var commit2 = await _coordinator.Http.PostAsJsonAsync($"api/v1/uploads/{status["uploadId"]!.GetValue<string>()}/commit", new { name = "again.img" });
        Assert.Equal(HttpStatusCode.Created, commit2.StatusCode);
        Assert.Equal(data, await _coordinator.Http.GetByteArrayAsync("api/v1/images/again.img"));
    }

    private static ByteArrayContent Part(IEnumerable<byte[]> chunks)
    {
        var body = new MemoryStream();
        foreach (var chunk in chunks)
        {
            body.Write(SHA256.HashData(chunk));
            var length = new byte[4];
            BinaryPrimitives.WriteInt32BigEndian(length, chunk.Length);
            body.Write(length);
        }
        return new ByteArrayContent(body.ToArray());
    }

    private async Task<string> OpenStreamedAsync()
    {
        using var create = await _coordinator.Http.PostAsync("api/v1/uploads?streaming=true", null);
        Assert.Equal(HttpStatusCode.Created, create.StatusCode);
        return JsonNode.Parse(await create.Content.ReadAsStringAsync())!["uploadId"]!.GetValue<string>();
    }

    /// <summary>
    /// A streamed push (msdctl's): parts are declared as the client cuts, each answered with the indexes of the chunks
    /// the store lacks; the commit assembles the manifest from the parts with the stated size and SHA-256. GC between
    /// the chunks and the commit keeps the declared chunks. A re-push of the same bytes is told every chunk is stored.
    /// </summary>
    [Fact]
    public async Task StreamedPush_PartsThenChunksThenCommit_StoresTheImage_AndSurvivesGc()
    {
        var data = new byte[7 * 1024 * 1024 + 5];
        new Random(81).NextBytes(data);
        var (manifest, chunks) = await ChunkLocallyAsync(data);
        var split = chunks.Count / 3;
        var id = await OpenStreamedAsync();
        // Part 1 may be declared before part 0 (the client declares ahead); each answer lists what to send.
        using (var second = await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/parts/1", Part(chunks.Skip(split))))
            Assert.Equal(chunks.Count - split, JsonNode.Parse(await second.Content.ReadAsStringAsync())!["missing"]!.AsArray().Count);
        using (var first = await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/parts/0", Part(chunks.Take(split))))
            Assert.Equal(split, JsonNode.Parse(await first.Content.ReadAsStringAsync())!["missing"]!.AsArray().Count);
        (await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/chunks", Frames(chunks))).EnsureSuccessStatusCode();
        (await _coordinator.Http.PostAsync("api/v1/gc", null)).EnsureSuccessStatusCode();
        using var commit = await _coordinator.Http.PostAsJsonAsync($"api/v1/uploads/{id}/commit",
            new { name = "streamed.img", parts = 2, size = data.Length, sha256 = Convert.ToHexStringLower(SHA256.HashData(data)) });
        Assert.Equal(HttpStatusCode.Created, commit.StatusCode);
        var entry = JsonNode.Parse(await commit.Content.ReadAsStringAsync())!;
        Assert.Equal(ImageDigest.Compute(manifest.ToBytes()).ToString(), entry["digest"]!.GetValue<string>()); // the same manifest as a whole-manifest push
        Assert.Equal(data, await _coordinator.Http.GetByteArrayAsync("api/v1/images/streamed.img"));

        var again = await OpenStreamedAsync();
        using var part = await _coordinator.Http.PostAsync($"api/v1/uploads/{again}/parts/0", Part(chunks));
        Assert.Empty(JsonNode.Parse(await part.Content.ReadAsStringAsync())!["missing"]!.AsArray());
        using var commit2 = await _coordinator.Http.PostAsJsonAsync($"api/v1/uploads/{again}/commit", new { name = "streamed-again.img", parts = 1, size = data.Length });
        Assert.Equal(HttpStatusCode.Created, commit2.StatusCode); // no SHA-256 stated: computed from the stored chunks
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(data)), JsonNode.Parse(await commit2.Content.ReadAsStringAsync())!["sha256"]!.GetValue<string>());
    }

    /// <summary>Every malformed step of a streamed push is refused with its own error, and nothing is committed.</summary>
    [Fact]
    public async Task StreamedPush_BadInput_RefusedAndNothingCommitted()
    {
        var data = new byte[3 * 1024 * 1024];
        new Random(82).NextBytes(data);
        var (manifest, chunks) = await ChunkLocallyAsync(data);
        var id = await OpenStreamedAsync();
        async Task ExpectAsync(HttpResponseMessage response, HttpStatusCode status, string code)
        {
            using (response)
            {
                Assert.Equal(status, response.StatusCode);
                Assert.Contains(code, await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            }
        }
        await ExpectAsync(await _coordinator.Http.PostAsync("api/v1/uploads?streaming=yes", null), HttpStatusCode.BadRequest, "invalid-query");
        await ExpectAsync(await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/parts/0", new ByteArrayContent(new byte[35])), HttpStatusCode.BadRequest, "invalid-part");
        var zeroLength = new byte[36];
        await ExpectAsync(await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/parts/0", new ByteArrayContent(zeroLength)), HttpStatusCode.BadRequest, "invalid-part");
        await ExpectAsync(await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/parts/-1", Part(chunks)), HttpStatusCode.BadRequest, "invalid-part");
        (await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/parts/0", Part(chunks.Take(2)))).EnsureSuccessStatusCode();
        (await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/parts/0", Part(chunks.Take(2)))).EnsureSuccessStatusCode(); // a retry: same bytes
        await ExpectAsync(await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/parts/0", Part(chunks.Take(3))), HttpStatusCode.Conflict, "part-conflict");
        // A chunk no part declared yet is refused; a declared one is taken.
        await ExpectAsync(await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/chunks", Frames(chunks.Skip(2).Take(1))), HttpStatusCode.BadRequest, "unexpected-chunk");
        (await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/parts/1", Part(chunks.Skip(2)))).EnsureSuccessStatusCode();
        await ExpectAsync(await _coordinator.Http.PostAsJsonAsync($"api/v1/uploads/{id}/commit", new { name = "bad.img", parts = 2, size = data.Length }), HttpStatusCode.Conflict, "chunks-missing");
        (await _coordinator.Http.PostAsync($"api/v1/uploads/{id}/chunks", Frames(chunks))).EnsureSuccessStatusCode();
        await ExpectAsync(await _coordinator.Http.PostAsJsonAsync($"api/v1/uploads/{id}/commit", new { name = "bad.img", size = data.Length }), HttpStatusCode.BadRequest, "invalid-body");
        await ExpectAsync(await _coordinator.Http.PostAsJsonAsync($"api/v1/uploads/{id}/commit", new { name = "bad.img", parts = 3, size = data.Length }), HttpStatusCode.Conflict, "parts-missing");
        await ExpectAsync(await _coordinator.Http.PostAsJsonAsync($"api/v1/uploads/{id}/commit", new { name = "bad.img", parts = 1, size = data.Length }), HttpStatusCode.Conflict, "unexpected-part");
        await ExpectAsync(await _coordinator.Http.PostAsJsonAsync($"api/v1/uploads/{id}/commit", new { name = "bad.img", parts = 2, size = data.Length - 1 }), HttpStatusCode.BadRequest, "size-mismatch");
        await ExpectAsync(await _coordinator.Http.PostAsJsonAsync($"api/v1/uploads/{id}/commit", new { name = "bad.img", parts = 2, size = data.Length, sha256 = "xyz" }), HttpStatusCode.BadRequest, "invalid-sha256");
        await ExpectAsync(await _coordinator.Http.PostAsJsonAsync($"api/v1/uploads/{id}/commit",
            new { name = "bad.img", parts = 2, size = data.Length, sha256 = Convert.ToHexStringLower(SHA256.HashData(data.AsSpan(1))) }), HttpStatusCode.UnprocessableEntity, "sha256-mismatch");
        Assert.Equal(HttpStatusCode.NotFound, (await _coordinator.Http.GetAsync("api/v1/images/bad.img")).StatusCode);
        // Parts belong to streamed uploads only.
        using var whole = await _coordinator.Http.PostAsync("api/v1/uploads", new ByteArrayContent(manifest.ToBytes()));
        var wholeId = JsonNode.Parse(await whole.Content.ReadAsStringAsync())!["uploadId"]!.GetValue<string>();
        await ExpectAsync(await _coordinator.Http.PostAsync($"api/v1/uploads/{wholeId}/parts/0", Part(chunks)), HttpStatusCode.Conflict, "not-streaming");
    }

    [Fact]
    public async Task Import_ConnectionBreaksMidway_ResumesWithRangeAndVerifies()
    {
        var (path, sha256) = await TestImages.CreateAsync(_work, "remote.iso", 20L * 1024 * 1024 + 3, seed: 43);
        await using var origin = await FlakyOrigin.StartAsync(path, breakAfterBytes: 7 * 1024 * 1024, https: false);
        var job = await StartImportAsync(new { url = origin.Url, name = "imported.iso", sha256 });
        Assert.Equal("succeeded", job["state"]!.GetValue<string>());
        Assert.Equal(sha256, job["image"]!["sha256"]!.GetValue<string>());
        Assert.True(origin.RangeRequests >= 1, "the import never resumed with a Range request");
        Assert.Equal(sha256, Convert.ToHexStringLower(SHA256.HashData(await _coordinator.Http.GetByteArrayAsync("api/v1/images/imported.iso"))));
    }

    [Fact]
    public async Task Import_WrongExpectedSha_FailsAndCommitsNothing()
    {
        var (path, _) = await TestImages.CreateAsync(_work, "other.iso", 2 * 1024 * 1024, seed: 44);
        await using var origin = await FlakyOrigin.StartAsync(path, breakAfterBytes: null, https: false);
        var job = await StartImportAsync(new { url = origin.Url, name = "wrong.iso", sha256 = new string('a', 64) });
        Assert.Equal("failed", job["state"]!.GetValue<string>());
        Assert.Contains("SHA-256", job["error"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.NotFound, (await _coordinator.Http.GetAsync("api/v1/images/wrong.iso")).StatusCode);
    }

    [Fact]
    public async Task Import_UntrustedTlsCertificate_Refused()
    {
        var (path, _) = await TestImages.CreateAsync(_work, "tls.iso", 1024 * 1024, seed: 45);
        await using var origin = await FlakyOrigin.StartAsync(path, breakAfterBytes: null, https: true);
        var job = await StartImportAsync(new { url = origin.Url, name = "tls.iso" });
        Assert.Equal("failed", job["state"]!.GetValue<string>());
        Assert.Contains("TLS", job["error"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.Equal(0, origin.BytesServed);
    }

    [Theory]
    [InlineData("ftp://example/x.iso", "x.iso", "invalid-url")]
    [InlineData("not a url", "x.iso", "invalid-url")]
    [InlineData("http://127.0.0.1/x.iso", "../x", "invalid-image-name")]
    public async Task Import_BadRequest_400(string url, string name, string code)
    {
        using var response = await _coordinator.Http.PostAsJsonAsync("api/v1/images/import", new { url, name });
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains(code, await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    private async Task<JsonObject> StartImportAsync(object request)
    {
        using var start = await _coordinator.Http.PostAsJsonAsync("api/v1/images/import", request);
        Assert.Equal(HttpStatusCode.Accepted, start.StatusCode);
        var id = JsonNode.Parse(await start.Content.ReadAsStringAsync())!["id"]!.GetValue<string>();
        return await Eventually.WaitAsync(async () =>
        {
            var job = JsonNode.Parse(await _coordinator.Http.GetStringAsync($"api/v1/jobs/{id}"))!.AsObject();
            // Queued until the leader's runner claims it, then running: wait for an end state.
            return job["state"]!.GetValue<string>() is "queued" or "running" ? null : job;
        }, TimeSpan.FromSeconds(60), "the import job to finish");
    }

    /// <summary>A real HTTP(S) origin that serves one file with Range support and can cut the first response short.</summary>
    private sealed class FlakyOrigin : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private int _rangeRequests;
        private long _served;
        private int _broken;

        private FlakyOrigin(WebApplication app, string url)
        {
            _app = app;
            Url = url;
        }

        public string Url { get; }
        public int RangeRequests => _rangeRequests;
        public long BytesServed => Interlocked.Read(ref _served);

        public static async Task<FlakyOrigin> StartAsync(string file, long? breakAfterBytes, bool https)
        {
            var port = TestPaths.FreePort();
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.ClearProviders();
            builder.WebHost.ConfigureKestrel(k => k.ListenLocalhost(port, l =>
            {
                if (https)
                    l.UseHttps(SelfSigned());
            }));
            var app = builder.Build();
            var origin = new FlakyOrigin(app, $"{(https ? "https" : "http")}://localhost:{port}/images/{Path.GetFileName(file)}");
            app.MapGet("/images/{name}", async (HttpContext context) =>
            {
                var length = new FileInfo(file).Length;
                long start = 0;
                if (context.Request.Headers.Range.Count > 0)
                {
                    Interlocked.Increment(ref origin._rangeRequests);
                    start = long.Parse(context.Request.Headers.Range.ToString()["bytes=".Length..].TrimEnd('-'), System.Globalization.CultureInfo.InvariantCulture);
                    context.Response.StatusCode = 206;
                    context.Response.Headers.ContentRange = $"bytes {start}-{length - 1}/{length}";
                }
                context.Response.Headers.ETag = "\"v1\"";
                context.Response.ContentLength = length - start;
                await using var stream = File.OpenRead(file);
                stream.Position = start;
                var buffer = new byte[64 * 1024];
                long sent = 0;
                int read;
                while ((read = await stream.ReadAsync(buffer)) > 0)
                {
                    if (breakAfterBytes is { } limit && sent >= limit && Interlocked.Exchange(ref origin._broken, 1) == 0)
                    {
                        context.Abort(); // the connection drops mid-body
                        return;
                    }
                    await context.Response.Body.WriteAsync(buffer.AsMemory(0, read));
                    sent += read;
                    Interlocked.Add(ref origin._served, read);
                }
            });
            await app.StartAsync();
            return origin;
        }

        private static X509Certificate2 SelfSigned()
        {
            using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
            var san = new SubjectAlternativeNameBuilder();
            san.AddDnsName("localhost");
            request.CertificateExtensions.Add(san.Build());
            using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
            return X509CertificateLoader.LoadPkcs12(cert.Export(X509ContentType.Pfx), null);
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}
