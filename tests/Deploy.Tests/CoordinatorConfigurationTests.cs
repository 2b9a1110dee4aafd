using System.ComponentModel.DataAnnotations;
using System.Reflection;
using k8s.Models;
using Microsoft.Extensions.Configuration;
using MsdFleet.Coordinator.Messaging;
using MsdFleet.Coordinator.State;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Deploy.Tests.Infrastructure;
using Npgsql;

namespace MsdFleet.Deploy.Tests;

/// <summary>
/// The configuration each kustomization hands the Coordinator (ConfigMap + env, secrets as placeholders),
/// bound and validated by the Coordinator's own options types: a misspelt key or an invalid value would
/// otherwise surface only as a crash-looping pod on a real cluster.
/// </summary>
public sealed class CoordinatorConfigurationTests
{
    public static TheoryData<string> Kustomizations() => [.. Manifests.Kustomizations];

    /// <summary>Configuration sections and the options type the Coordinator binds each to.</summary>
    private static readonly Dictionary<string, Type> Sections = new(StringComparer.Ordinal)
    {
        ["State"] = typeof(StateOptions),
        ["Storage"] = typeof(ObjectStoreOptions),
        ["Mqtt"] = typeof(MqttOptions),
        ["Metrics"] = typeof(MsdFleet.Coordinator.Observability.MetricsOptions),
        ["Tls"] = typeof(MsdFleet.Coordinator.Security.TlsOptions),
        ["Auth"] = typeof(MsdFleet.Coordinator.Auth.AuthOptions),
        ["HomeAssistant"] = typeof(MsdFleet.Coordinator.Integrations.HomeAssistantOptions),
    };

    /// <summary>Settings read by the framework or the runtime rather than by our options.</summary>
    private static readonly string[] FrameworkPrefixes = ["Logging__", "Urls", "ASPNETCORE_", "DOTNET_", "SSL_CERT_", "PG"];

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void EverySetting_NamesAPropertyOfTheOptionsItConfigures(string kustomization)
    {
        foreach (var key in Environment(kustomization).Keys)
        {
            if (FrameworkPrefixes.Any(p => key.StartsWith(p, StringComparison.Ordinal)))
                continue;
            var path = key.Split("__");
            Assert.True(Sections.TryGetValue(path[0], out var type), $"{kustomization}: {key} is not a section the Coordinator binds");
            foreach (var segment in path.Skip(1))
            {
                var property = type!.GetProperty(segment, BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase);
                Assert.True(property is { CanWrite: true }, $"{kustomization}: {key}: {type.Name} has no settable property {segment}");
                type = property!.PropertyType;
            }
        }
    }

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void Configuration_PassesTheCoordinatorsStartupValidation_ForSharedReplicaState(string kustomization)
    {
        var configuration = Bind(kustomization);
        var mounts = MountPaths(kustomization);

        var state = Validate<StateOptions>(configuration, StateOptions.Section, mounts);
        Assert.True(state.IsPostgres, "replicas share one PostgreSQL; SQLite is the single-process default");
        Assert.DoesNotContain("password", new NpgsqlConnectionStringBuilder(state.ConnectionString).Keys, StringComparer.OrdinalIgnoreCase);
        var storage = Validate<ObjectStoreOptions>(configuration, ObjectStoreOptions.Section, mounts);
        Assert.True(storage.IsS3, "replicas share one object store; the filesystem store is per host");
        var mqtt = Validate<MqttOptions>(configuration, MqttOptions.Section, mounts);
        Assert.False(mqtt.IsEmbedded, "replicas share an external broker; the embedded one is per process");
        Assert.Equal("9464", configuration["Metrics:Port"]);
        Assert.True(configuration["Urls"] is null or "http://+:8080", "the image listens on 8080 (Urls) and the probes expect it");
    }

    [Fact]
    public void Prod_ReachesEveryExternalServiceOverVerifiedTls_WithTheMountedCa()
    {
        var configuration = Bind("overlays/prod");
        var mounts = MountPaths("overlays/prod");

        var database = new NpgsqlConnectionStringBuilder(configuration["State:ConnectionString"]);
        Assert.Equal(SslMode.VerifyFull, database.SslMode);
        Assert.Contains(mounts, m => database.RootCertificate!.StartsWith(m + "/", StringComparison.Ordinal));
        Assert.Equal("https", new Uri(configuration["Storage:S3:Endpoint"]!).Scheme);
        Assert.StartsWith("mqtts://", configuration["Mqtt:Broker"], StringComparison.Ordinal);
        Assert.StartsWith("mqtts://", configuration["Mqtt:PublicUrl"], StringComparison.Ordinal);
        Assert.Contains(mounts, m => configuration["Mqtt:CaCertificatePath"]!.StartsWith(m + "/", StringComparison.Ordinal));
        Assert.Contains(mounts, m => configuration["SSL_CERT_FILE"]!.StartsWith(m + "/", StringComparison.Ordinal));
        Assert.Equal("https", new Uri(configuration["Auth:PublicUrl"]!).Scheme);
    }

    [Fact]
    public void Validation_RefusesABrokenSetting_SoTheChecksAboveCanFail()
    {
        var broken = Environment("overlays/prod");
        broken["Storage__S3__Endpoint"] = "s3.example.net"; // no scheme
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(broken.Select(kv => KeyValuePair.Create(kv.Key.Replace("__", ":", StringComparison.Ordinal), (string?)kv.Value))).Build();

        Assert.ThrowsAny<Exception>(() => Validate<ObjectStoreOptions>(configuration, ObjectStoreOptions.Section, MountPaths("overlays/prod")));
    }

    /// <summary>The Coordinator container's environment as the kubelet would build it: envFrom, then env; secrets as placeholders.</summary>
    private static Dictionary<string, string> Environment(string kustomization)
    {
        var objects = Manifests.Load(kustomization);
        var container = objects.Coordinator().Spec.Template.Spec.Containers[0];
        var maps = objects.OfType<V1ConfigMap>().ToDictionary(m => m.Metadata.Name, StringComparer.Ordinal);
        var environment = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var from in container.EnvFrom ?? [])
            foreach (var (key, value) in maps[from.ConfigMapRef.Name].Data)
                environment[key] = value;
        foreach (var env in container.Env ?? [])
            environment[env.Name] = env.Value ?? $"from-secret-{env.ValueFrom.SecretKeyRef.Name}-{env.ValueFrom.SecretKeyRef.Key}";
        return environment;
    }

    private static IConfiguration Bind(string kustomization) =>
        new ConfigurationBuilder().AddInMemoryCollection(Environment(kustomization)
            .Select(kv => KeyValuePair.Create(kv.Key.Replace("__", ":", StringComparison.Ordinal), (string?)kv.Value))).Build();

    private static List<string> MountPaths(string kustomization) =>
        [.. Manifests.Load(kustomization).Coordinator().Spec.Template.Spec.Containers[0].VolumeMounts.Select(m => m.MountPath.TrimEnd('/'))];

    /// <summary>
    /// Binds and validates as the Coordinator does at start (data annotations, then IValidatableObject). A file
    /// the options must find (a CA bundle) cannot exist here; it must instead lie under a mounted volume.
    /// </summary>
    private static T Validate<T>(IConfiguration configuration, string section, IReadOnlyList<string> mounts) where T : class, new()
    {
        var options = configuration.GetSection(section).Get<T>() ?? new T();
        var results = new List<ValidationResult>();
        Validator.TryValidateObject(options, new ValidationContext(options), results, validateAllProperties: true);
        var errors = results.Where(r => !IsMountedFile(r, options, mounts)).Select(r => r.ErrorMessage).ToList();
        Assert.True(errors.Count == 0, $"{section}: {string.Join("; ", errors)}");
        return options;
    }

    private static bool IsMountedFile(ValidationResult result, object options, IReadOnlyList<string> mounts) =>
        result.ErrorMessage?.Contains("does not exist", StringComparison.Ordinal) == true
        && result.MemberNames.Select(m => options.GetType().GetProperty(m)?.GetValue(options) as string).OfType<string>()
            .All(path => mounts.Any(m => path.StartsWith(m + "/", StringComparison.Ordinal)));
}
