using System.Text.RegularExpressions;
using k8s.Models;
using MsdFleet.Deploy.Tests.Infrastructure;

namespace MsdFleet.Deploy.Tests;

/// <summary>
/// What the rendered manifests must hold whatever an overlay changes: pods that cannot become root or write
/// their image, probes everywhere, selectors that really select the pods, pinned images, and no secret
/// values in the repository.
/// </summary>
public sealed partial class ManifestPolicyTests
{
    public static TheoryData<string> Kustomizations() => [.. Manifests.Kustomizations];

    /// <summary>The kustomizations whose Secrets an operator creates; dev generates plainly dev-only ones.</summary>
    public static TheoryData<string> WithoutGeneratedSecrets() => ["base", "overlays/prod"];

    private static readonly string[] CoordinatorPodLabels = ["app.kubernetes.io/name", "app.kubernetes.io/component"];

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void EveryContainer_RunsAsNonRoot_OnAReadOnlyRoot_WithoutPrivilegeEscalationOrCapabilities(string kustomization)
    {
        var templates = Manifests.Load(kustomization).PodTemplates().ToList();
        Assert.NotEmpty(templates);
        foreach (var (workload, template) in templates)
        {
            var pod = template.Spec.SecurityContext;
            Assert.False(template.Spec.HostNetwork == true || template.Spec.HostPID == true || template.Spec.HostIPC == true, $"{workload} shares a host namespace");
            foreach (var c in template.Spec.AllContainers())
            {
                var where = $"{kustomization}: {workload} container {c.Name}";
                var s = c.SecurityContext;
                Assert.True((s?.RunAsNonRoot ?? pod?.RunAsNonRoot) == true, $"{where}: runAsNonRoot is not true");
                Assert.True((s?.RunAsUser ?? pod?.RunAsUser) is > 0, $"{where}: no non-zero runAsUser (an image's USER name cannot be checked by runAsNonRoot)");
                Assert.True(s?.ReadOnlyRootFilesystem == true, $"{where}: readOnlyRootFilesystem is not true");
                Assert.True(s?.AllowPrivilegeEscalation == false, $"{where}: allowPrivilegeEscalation is not false");
                Assert.True(s?.Privileged != true, $"{where}: privileged");
                Assert.Contains("ALL", s?.Capabilities?.Drop ?? []);
                Assert.Empty(s?.Capabilities?.Add ?? []);
                Assert.Equal("RuntimeDefault", (s?.SeccompProfile ?? pod?.SeccompProfile)?.Type);
            }
            Assert.False(template.Spec.AutomountServiceAccountToken != false, $"{workload}: the service account token is mounted; nothing here talks to the API server");
        }
    }

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void EveryWorkloadContainer_HasLivenessAndReadinessProbes_AndResources(string kustomization)
    {
        foreach (var (workload, template) in Manifests.Load(kustomization).PodTemplates())
        {
            foreach (var c in template.Spec.Containers)
            {
                var where = $"{kustomization}: {workload} container {c.Name}";
                Assert.True(c.LivenessProbe is not null, $"{where}: no livenessProbe");
                Assert.True(c.ReadinessProbe is not null, $"{where}: no readinessProbe");
                Assert.True(c.Resources?.Requests?.ContainsKey("memory") == true && c.Resources.Requests.ContainsKey("cpu"), $"{where}: no cpu and memory requests");
                Assert.True(c.Resources?.Limits?.ContainsKey("memory") == true, $"{where}: no memory limit");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void Coordinator_ProbesTheHealthEndpointsTheCodeMaps_OnItsHttpPort(string kustomization)
    {
        var container = Assert.Single(Manifests.Load(kustomization).Coordinator().Spec.Template.Spec.Containers);
        var app = File.ReadAllText(Path.Combine(RepoPaths.Root, "src", "Coordinator", "Web", "HealthEndpoints.cs"));
        foreach (var (probe, path) in new[] { (container.StartupProbe, "/healthz"), (container.LivenessProbe, "/healthz"), (container.ReadinessProbe, "/readyz") })
        {
            Assert.NotNull(probe?.HttpGet);
            Assert.Equal(path, probe.HttpGet.Path);
            Assert.Equal("http", probe.HttpGet.Port.Value);
            Assert.Contains($"MapGet(\"{path}\"", app, StringComparison.Ordinal);
        }
        Assert.Contains(container.Ports, p => p.Name == "http" && p.ContainerPort == 8080);
        Assert.Contains(container.Ports, p => p.Name == "metrics" && p.ContainerPort == 9464);
        // Migrations run before /healthz answers: the startup probe allows a minute or more.
        Assert.True(container.StartupProbe!.PeriodSeconds * container.StartupProbe.FailureThreshold >= 60);
    }

    [Theory]
    [InlineData("base", 2)]
    [InlineData("overlays/dev", 2)]
    [InlineData("overlays/prod", 3)]
    public void Coordinator_RollsWithoutUnavailability_AndKeepsItsScratchSpaceWritable(string kustomization, int replicas)
    {
        var objects = Manifests.Load(kustomization);
        var deployment = objects.Coordinator();

        Assert.Equal(replicas, deployment.Spec.Replicas);
        Assert.Equal("RollingUpdate", deployment.Spec.Strategy.Type);
        Assert.Equal("0", deployment.Spec.Strategy.RollingUpdate.MaxUnavailable.Value);
        Assert.Equal("1", deployment.Spec.Strategy.RollingUpdate.MaxSurge.Value);
        var pod = deployment.Spec.Template.Spec;
        var account = Assert.Single(objects.OfType<V1ServiceAccount>(), a => a.Metadata.Name == pod.ServiceAccountName);
        Assert.False(account.AutomountServiceAccountToken);
        var tmp = Assert.Single(pod.Containers[0].VolumeMounts, m => m.MountPath == "/tmp");
        Assert.NotNull(Assert.Single(pod.Volumes, v => v.Name == tmp.Name).EmptyDir);
        var pdb = Assert.Single(objects.OfType<V1PodDisruptionBudget>());
        Assert.Equal("1", pdb.Spec.MinAvailable.Value);
    }

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void ServicesPdbsAndMonitors_SelectThePodsTheyAreFor(string kustomization)
    {
        var objects = Manifests.Load(kustomization);
        var coordinator = objects.Coordinator();
        var podLabels = coordinator.Spec.Template.Metadata.Labels;
        Assert.All(CoordinatorPodLabels, l => Assert.True(podLabels.ContainsKey(l), $"Coordinator pods lack label {l}"));
        Assert.True(Manifests.Selects(coordinator.Spec.Selector, podLabels), "the Deployment's selector does not match its own pods");

        var templates = objects.PodTemplates().ToList();
        foreach (var service in objects.OfType<V1Service>())
        {
            var selected = templates.Where(t => Manifests.Selects(service.Spec.Selector, t.Template.Metadata.Labels)).ToList();
            Assert.True(selected.Count == 1, $"{kustomization}: Service {service.Metadata.Name} selects {selected.Count} workloads");
            // Every named targetPort is a port the selected containers declare.
            var ports = selected[0].Template.Spec.Containers.SelectMany(c => c.Ports ?? []).ToList();
            Assert.All(service.Spec.Ports, p => Assert.Contains(ports, c => p.TargetPort.Value == c.Name || p.TargetPort.Value == c.ContainerPort.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        }
        Assert.True(Manifests.Selects(Assert.Single(objects.OfType<V1Service>(), s => s.Metadata.Name == "msdfleet-coordinator").Spec.Selector, podLabels));
        Assert.All(objects.OfType<V1PodDisruptionBudget>(), pdb => Assert.True(Manifests.Selects(pdb.Spec.Selector, podLabels), $"PDB {pdb.Metadata.Name} does not select the Coordinator"));
        foreach (var monitor in objects.OfType<ServiceMonitor>())
        {
            var service = Assert.Single(objects.OfType<V1Service>(), s => Manifests.Selects(monitor.Spec.Selector, s.Metadata.Labels));
            Assert.Equal("msdfleet-coordinator", service.Metadata.Name);
            Assert.All(monitor.Spec.Endpoints, e => Assert.Contains(service.Spec.Ports, p => p.Name == e.Port));
            Assert.Equal("/metrics", Assert.Single(monitor.Spec.Endpoints).Path);
        }
    }

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void NetworkPolicies_DenyByDefault_AdmitTheApiFromAnywhere_AndMetricsOnlyFromMonitoring(string kustomization)
    {
        var objects = Manifests.Load(kustomization);
        var policies = objects.OfType<V1NetworkPolicy>().ToList();
        var podLabels = objects.Coordinator().Spec.Template.Metadata.Labels;
        var templates = objects.PodTemplates().ToList();

        var deny = Assert.Single(policies, p => p.Spec.PodSelector.MatchLabels is not { Count: > 0 });
        Assert.Equal(["Egress", "Ingress"], deny.Spec.PolicyTypes.Order(StringComparer.Ordinal));
        Assert.Empty(deny.Spec.Ingress ?? []);
        Assert.Empty(deny.Spec.Egress ?? []);
        // Every policy selects at least one of our pods: a selector typo would silently protect nothing.
        Assert.All(policies, p => Assert.True(templates.Any(t => Manifests.Selects(p.Spec.PodSelector, t.Template.Metadata.Labels)), $"NetworkPolicy {p.Metadata.Name} selects no pod"));

        var ingress = policies.Where(p => Manifests.Selects(p.Spec.PodSelector, podLabels)).SelectMany(p => p.Spec.Ingress ?? []).ToList();
        Assert.Contains(ingress, r => r.FromProperty is not { Count: > 0 } && r.Ports.Any(p => p.Port.Value == "8080"));
        var metrics = Assert.Single(ingress, r => r.Ports.Any(p => p.Port.Value == "9464"));
        var from = Assert.Single(metrics.FromProperty);
        Assert.Null(from.IpBlock);
        Assert.Equal("monitoring", from.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"]);
        Assert.DoesNotContain(ingress, r => r != metrics && (r.Ports is not { Count: > 0 } || r.Ports.Any(p => p.Port.Value == "9464")));

        var egress = policies.Where(p => Manifests.Selects(p.Spec.PodSelector, podLabels) && p.Spec.PodSelector.MatchLabels is { Count: > 0 }).SelectMany(p => p.Spec.Egress ?? []).ToList();
        Assert.Contains(egress, r => r.Ports.Any(p => p.Port.Value == "53" && p.Protocol == "UDP"));
        Assert.Contains(egress, r => r.Ports.Any(p => p.Port.Value == "5432"));
    }

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void EveryImage_IsPinned_AndTheCoordinatorsTagIsTheProjectVersion(string kustomization)
    {
        var objects = Manifests.Load(kustomization);
        foreach (var (workload, template) in objects.PodTemplates())
        {
            foreach (var c in template.Spec.AllContainers())
            {
                var image = c.Image;
                var name = image.Split('@')[0];
                var tag = name.LastIndexOf(':') > name.LastIndexOf('/') ? name[(name.LastIndexOf(':') + 1)..] : null;
                Assert.False(tag is null && !image.Contains('@', StringComparison.Ordinal), $"{workload}/{c.Name}: image {image} has no tag");
                Assert.False(string.Equals(tag, "latest", StringComparison.OrdinalIgnoreCase), $"{workload}/{c.Name}: image {image} is :latest");
                Assert.False(tag is not null && !Regex.IsMatch(tag, @"\d"), $"{workload}/{c.Name}: tag {tag} names no version");
            }
        }
        var version = VersionTag().Match(File.ReadAllText(Path.Combine(RepoPaths.Root, "Directory.Build.props"))).Groups[1].Value;
        Assert.EndsWith(":" + version, objects.Coordinator().Spec.Template.Spec.Containers[0].Image, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(WithoutGeneratedSecrets))]
    public void BaseAndProd_ContainNoSecretObjects(string kustomization)
    {
        var secrets = Manifests.Load(kustomization).OfType<V1Secret>().Select(s => s.Metadata.Name).ToList();
        Assert.True(secrets.Count == 0, $"{kustomization} carries Secrets: {string.Join(", ", secrets)}");
    }

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void SecretLookingSettings_ComeOnlyFromSecretReferences(string kustomization)
    {
        var objects = Manifests.Load(kustomization);
        foreach (var (workload, template) in objects.PodTemplates())
        {
            foreach (var c in template.Spec.AllContainers())
            {
                foreach (var env in c.Env ?? [])
                {
                    if (SecretLooking().IsMatch(env.Name))
                        Assert.True(env.Value is null && env.ValueFrom?.SecretKeyRef is not null, $"{kustomization}: {workload}/{c.Name} sets {env.Name} without a secretKeyRef");
                    Assert.False(env.Value is not null && InlinePassword().IsMatch(env.Value), $"{workload}/{c.Name}: {env.Name} holds a password");
                }
            }
        }
        foreach (var map in objects.OfType<V1ConfigMap>())
        {
            foreach (var (key, value) in map.Data ?? new Dictionary<string, string>())
            {
                Assert.False(SecretLooking().IsMatch(key), $"ConfigMap {map.Metadata.Name} has a secret-looking key {key}");
                Assert.False(InlinePassword().IsMatch(value), $"ConfigMap {map.Metadata.Name} key {key} holds a password");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void EveryReferencedSecretAndConfigMap_IsRenderedOrDocumented(string kustomization)
    {
        var objects = Manifests.Load(kustomization);
        var docs = File.ReadAllText(Path.Combine(RepoPaths.Root, "docs", "kubernetes.md"));
        var secrets = objects.OfType<V1Secret>().ToDictionary(s => s.Metadata.Name, StringComparer.Ordinal);
        var maps = objects.OfType<V1ConfigMap>().ToDictionary(m => m.Metadata.Name, StringComparer.Ordinal);
        foreach (var (workload, template) in objects.PodTemplates())
        {
            foreach (var c in template.Spec.AllContainers())
            {
                foreach (var reference in (c.Env ?? []).Select(e => e.ValueFrom?.SecretKeyRef).OfType<V1SecretKeySelector>())
                {
                    if (secrets.TryGetValue(reference.Name, out var secret))
                        Assert.True(secret.Data?.ContainsKey(reference.Key) == true || secret.StringData?.ContainsKey(reference.Key) == true, $"{workload}: Secret {reference.Name} has no key {reference.Key}");
                    else
                        Assert.True(docs.Contains($"`{reference.Name}`", StringComparison.Ordinal) && docs.Contains($"`{reference.Key}`", StringComparison.Ordinal),
                            $"{kustomization}: {workload} needs Secret {reference.Name} key {reference.Key}, which docs/kubernetes.md does not describe");
                }
                foreach (var from in c.EnvFrom ?? [])
                    Assert.True(from.ConfigMapRef is null || maps.ContainsKey(from.ConfigMapRef.Name), $"{workload}: envFrom ConfigMap {from.ConfigMapRef?.Name} is not rendered");
            }
            foreach (var volume in template.Spec.Volumes ?? [])
            {
                if (volume.ConfigMap is { } map && !maps.ContainsKey(map.Name))
                    Assert.True(docs.Contains($"`{map.Name}`", StringComparison.Ordinal), $"{workload}: ConfigMap {map.Name} is neither rendered nor documented");
                Assert.True(volume.Secret is null || secrets.ContainsKey(volume.Secret.SecretName) || docs.Contains($"`{volume.Secret.SecretName}`", StringComparison.Ordinal));
            }
        }
    }

    // Names of settings that carry credentials: passwords, secrets, tokens, access keys, private keys.
    [GeneratedRegex("(?i)(pass(word|wd)?|secret|token|access_?key|api_?key|private_?key|credential)")]
    private static partial Regex SecretLooking();

    // A password inline in a value, e.g. a connection string's Password=… (PGPASSWORD carries it instead).
    [GeneratedRegex("(?i)(^|[;\\s])(password|pwd)\\s*=")]
    private static partial Regex InlinePassword();

    [GeneratedRegex("<Version>([^<]+)</Version>")]
    private static partial Regex VersionTag();
}
