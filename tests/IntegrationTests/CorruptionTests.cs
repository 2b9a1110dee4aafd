using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// A chunk source that lies: the first pack range it serves has one byte flipped, and once the agent caught
/// that, the next one is cut off halfway. The agent must reject both, fetch those chunks again, and never attach corrupted bytes.
/// </summary>
public sealed class CorruptionTests : IDisposable
{
    private readonly string _work = TestPaths.NewTempDir("corruption");

    public void Dispose() => Directory.Delete(_work, true);

    [Fact]
    public async Task CorruptedAndTruncatedChunks_RejectedAndFetchedAgain_ImageIntact()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        await using var liar = await LyingProxy.StartAsync(coordinator.BaseUrl);
        await using var agent = new AgentProcess("victim2", await coordinator.CreateAgentSecretAsync("victim2"), coordinator, coordinatorUrl: liar.Url);
        liar.FirstLieCaught = () => agent.Log.Contains("failed verification", StringComparison.Ordinal);
        agent.Start();
        var (path, sha256) = await TestImages.CreateAsync(_work, "precious.img", 24L * 1024 * 1024, seed: 77);
        var digest = (await coordinator.UploadAsync("precious.img", path))["digest"]!.GetValue<string>();
        using (var set = await coordinator.SetDriveAsync("victim2", 0, new { image = "precious.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);

        await coordinator.WaitForAgentAsync("victim2", a => CoordinatorInstance.Drive(a, 0)?["image"]?.GetValue<string>() == digest,
            "attached despite the lying source", diagnostics: () => agent.Log);
        Assert.Equal(sha256, TestImages.Sha256Of(agent.Lun("file")));
        Assert.True(liar.Corrupted && liar.Truncated, "the proxy never got to lie");
        Assert.Contains("failed verification", agent.Log, StringComparison.Ordinal);
        Assert.Contains("ended early", agent.Log, StringComparison.Ordinal);
    }

    /// <summary>Forwards everything to the Coordinator; tampers with the first two pack responses.</summary>
    private sealed class LyingProxy : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly HttpClient _upstream;
        private int _packResponses;

        private LyingProxy(WebApplication app, HttpClient upstream, Uri url)
        {
            _app = app;
            _upstream = upstream;
            Url = url;
        }

        public Uri Url { get; }
        public bool Corrupted { get; private set; }
        public bool Truncated { get; private set; }

        /// <summary>
        /// The second lie waits until the agent has caught the first: the agent fetches ranges in parallel and
        /// cancels its siblings when one fails, so a truncation racing the corruption could be cancelled unseen.
        /// </summary>
        public Func<bool> FirstLieCaught { get; set; } = () => true;

        private int _truncations;

        public static async Task<LyingProxy> StartAsync(Uri upstreamBase)
        {
            var port = TestPaths.FreePort();
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.ClearProviders();
            builder.WebHost.UseUrls($"http://127.0.0.1:{port}");
            var app = builder.Build();
            var proxy = new LyingProxy(app, new HttpClient { BaseAddress = upstreamBase }, new Uri($"http://127.0.0.1:{port}/"));
            app.Run(proxy.ForwardAsync);
            await app.StartAsync();
            return proxy;
        }

        private async Task ForwardAsync(HttpContext context)
        {
            using var request = new HttpRequestMessage(new HttpMethod(context.Request.Method), context.Request.Path + context.Request.QueryString);
            foreach (var header in new[] { "Authorization", "Range" })
            {
                if (context.Request.Headers.TryGetValue(header, out var value))
                    request.Headers.TryAddWithoutValidation(header, value.ToArray());
            }
            using var response = await _upstream.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, context.RequestAborted);
            var body = await response.Content.ReadAsByteArrayAsync(context.RequestAborted);
            context.Response.StatusCode = (int)response.StatusCode;
            foreach (var (name, values) in response.Content.Headers.Concat(response.Headers))
            {
                if (!name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase))
                    context.Response.Headers[name] = values.ToArray();
            }
            var isPackRange = context.Request.Path.StartsWithSegments("/api/v1/packs") && (int)response.StatusCode == 206;
            var n = isPackRange ? Interlocked.Increment(ref _packResponses) : 0;
            if (n == 1 && body.Length > 1000)
            {
                body[1000] ^= 0x5A; // one flipped byte in the first chunk of the range
                Corrupted = true;
            }
            if (n > 1 && body.Length > 2 && FirstLieCaught() && Interlocked.Exchange(ref _truncations, 1) == 0)
            {
                await context.Response.Body.WriteAsync(body.AsMemory(0, body.Length / 2));
                await context.Response.Body.FlushAsync();
                Truncated = true;
                context.Abort();
                return;
            }
            await context.Response.Body.WriteAsync(body);
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
            _upstream.Dispose();
        }
    }
}
