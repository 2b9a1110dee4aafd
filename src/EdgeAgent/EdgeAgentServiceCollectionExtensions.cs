using System.Net.Http.Headers;
using System.Text;
using Microsoft.Extensions.Options;
using MsdFleet.EdgeAgent.Gadget;
using MsdFleet.EdgeAgent.Gadget.Kvmd;
using MsdFleet.EdgeAgent.Mqtt;
using MsdFleet.EdgeAgent.Reconciliation;
using MsdFleet.EdgeAgent.Snapshots;
using MsdFleet.EdgeAgent.Storage;
using MsdFleet.EdgeAgent.Transfers;
using MsdFleet.Protocol.Naming;
using MsdFleet.Protocol.Security;

namespace MsdFleet.EdgeAgent;

public static class EdgeAgentServiceCollectionExtensions
{
    public static HostApplicationBuilder AddEdgeAgent(this HostApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var services = builder.Services;
        services.AddOptions<AgentOptions>().BindConfiguration(AgentOptions.Section).ValidateOnStart();
        services.AddOptions<AgentMqttOptions>().BindConfiguration(AgentMqttOptions.Section).ValidateOnStart();
        services.AddOptions<GadgetOptions>().BindConfiguration(GadgetOptions.Section).ValidateOnStart();
        // Validators generated at compile time from the same attributes (and IValidatableObject), so
        // validation needs no reflection in the ahead-of-time compiled agent.
        services.AddSingleton<IValidateOptions<AgentOptions>, AgentOptionsValidator>();
        services.AddSingleton<IValidateOptions<AgentMqttOptions>, AgentMqttOptionsValidator>();
        services.AddSingleton<IValidateOptions<GadgetOptions>, GadgetOptionsValidator>();
        services.AddSingleton<IValidateOptions<KvmdOptions>, KvmdOptionsValidator>();
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton(sp => new TopicNames(sp.GetRequiredService<IOptions<AgentMqttOptions>>().Value.TopicPrefix));
        services.AddSingleton(sp => new LocalImageStore(sp.GetRequiredService<IOptions<AgentOptions>>().Value.StorageRoot));
        services.AddSingleton(sp => new WorkingCopyStore(sp.GetRequiredService<LocalImageStore>()));
        services.AddOptions<KvmdOptions>().BindConfiguration(KvmdOptions.Section).ValidateOnStart();
        services.AddSingleton<IGadgetDriver>(sp =>
        {
            var gadget = sp.GetRequiredService<IOptions<GadgetOptions>>().Value;
            var configfs = new ConfigfsGadgetDriver(gadget);
            // On a stock PiKVM kvmd owns drive 0 (through its API); its extra drives are configfs functions kvmd never touches.
            return gadget.Driver == "kvmd"
                ? new KvmdGadgetDriver(sp.GetRequiredService<IOptions<KvmdOptions>>().Value, configfs, sp.GetRequiredService<TimeProvider>(),
                    sp.GetRequiredService<ILogger<KvmdGadgetDriver>>())
                : configfs;
        });
        services.AddSingleton<DesiredStateHolder>();
        services.AddSingleton<TransferTracker>();
        services.AddSingleton(sp => new BandwidthThrottle(sp.GetRequiredService<IOptions<AgentOptions>>().Value.MaxBytesPerSecond, sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton<ImageCache>();
        services.AddSingleton<StartupRecovery>();
        services.AddSingleton<CoordinatorKey>();
        services.AddSingleton(sp =>
        {
            var path = sp.GetRequiredService<IOptions<AgentOptions>>().Value.CaCertificatePath;
            return string.IsNullOrEmpty(path) ? TlsTrust.System : TlsTrust.FromPemFile(path);
        });
        services.AddSingleton(sp => CreateHttpClient(sp.GetRequiredService<IOptions<AgentOptions>>().Value, sp.GetRequiredService<TlsTrust>()));
        services.AddSingleton<BlobClient>();
        services.AddSingleton<LocalSeeder>();
        services.AddSingleton<PartialFileRecovery>();
        services.AddSingleton<ImagePuller>();
        services.AddSingleton<AgentMqttService>();
        services.AddSingleton<IAgentPublisher, MqttAgentPublisher>();
        services.AddHostedService(sp => sp.GetRequiredService<AgentMqttService>());
        services.AddSingleton<StateObserver>();
        services.AddSingleton<StepScheduler>();
        services.AddSingleton<DriveSnapshotter>();
        services.AddSingleton<PlanRunner>();
        services.AddSingleton<HostReadMonitor>();
        services.AddSingleton<AgentReporter>();
        services.AddHostedService<ReconcileService>();
        return builder;
    }

    private static HttpClient CreateHttpClient(AgentOptions options, TlsTrust trust)
    {
        var handler = trust.Apply(new SocketsHttpHandler
        {
            MaxConnectionsPerServer = Math.Max(2, options.ParallelRequests * 2),
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            ConnectTimeout = TimeSpan.FromSeconds(10),
            AutomaticDecompression = System.Net.DecompressionMethods.None,
            AllowAutoRedirect = false,
            ConnectCallback = ConnectBoundedAsync,
        });
        var baseUrl = options.CoordinatorUrl!.ToString();
        var baseAddress = new Uri(baseUrl.EndsWith('/') ? baseUrl : baseUrl + "/");
        var credentials = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{options.Id}:{options.Secret}")));
        return new HttpClient(new CoordinatorCredentialsHandler(baseAddress, credentials) { InnerHandler = handler })
        {
            BaseAddress = baseAddress,
            Timeout = TimeSpan.FromMinutes(5),
        };
    }

    /// <summary>
    /// Bytes the kernel may hold for one connection before the agent reads them. Linux autotuning grows a
    /// lagging reader's buffer to 6 MiB; on a Pi that is kernel memory per pull connection, and bytes a
    /// kill or power cut throws away (they were never verified or written). 512 KiB (the kernel doubles it)
    /// still fills a 1 Gbit/s link at 8 ms RTT per connection, and a pull runs several.
    /// </summary>
    internal const int ReceiveBufferBytes = 512 * 1024;

    private static async ValueTask<Stream> ConnectBoundedAsync(SocketsHttpConnectionContext context, CancellationToken cancellationToken)
    {
        var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp)
        {
            NoDelay = true,
            ReceiveBufferSize = ReceiveBufferBytes,
        };
        try
        {
            await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
            return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Sends the agent's credentials to the Coordinator only: chunk sources may be presigned S3 URLs,
    /// which must not see them (and which refuse a request carrying two kinds of authentication).
    /// </summary>
    private sealed class CoordinatorCredentialsHandler(Uri coordinator, AuthenticationHeaderValue credentials) : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (request.RequestUri is { } uri && Uri.Compare(uri, coordinator, UriComponents.SchemeAndServer, UriFormat.Unescaped, StringComparison.OrdinalIgnoreCase) == 0)
                request.Headers.Authorization = credentials;
            return base.SendAsync(request, cancellationToken);
        }
    }
}
