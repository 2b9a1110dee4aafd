using System.Collections.Concurrent;
using System.Diagnostics;
using System.Reflection;
using k8s;
using k8s.Models;

namespace MsdFleet.Deploy.Tests.Infrastructure;

/// <summary>
/// Renders a kustomization with <c>kubectl kustomize</c> (offline; it does not validate) and loads the
/// result strictly into the official client's models, which refuses unknown fields and duplicate keys —
/// the check kubectl cannot make without an API server.
/// </summary>
public static class Manifests
{
    /// <summary>Every kustomization we ship, relative to deploy/k8s.</summary>
    public static readonly string[] Kustomizations = ["base", "overlays/dev", "overlays/prod"];

    private static readonly ConcurrentDictionary<string, Lazy<string>> Rendered = new(StringComparer.Ordinal);

    /// <summary>apiVersion/kind → model, for every kind the client knows, plus our ServiceMonitor.</summary>
    public static IDictionary<string, Type> TypeMap { get; } = BuildTypeMap();

    public static string Render(string kustomization) =>
        Rendered.GetOrAdd(kustomization, k => new Lazy<string>(() => Kustomize(Path.Combine(RepoPaths.K8s, k)))).Value;

    public static IReadOnlyList<object> Load(string kustomization) => LoadYaml(Render(kustomization));

    public static IReadOnlyList<object> LoadYaml(string yaml, bool strict = true) =>
        KubernetesYaml.LoadAllFromString(yaml, TypeMap, strict);

    public static string Kustomize(string directory)
    {
        var start = new ProcessStartInfo("kubectl") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add("kustomize");
        start.ArgumentList.Add(directory);
        Process? started;
        try
        {
            started = Process.Start(start);
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InvalidOperationException("kubectl (with kustomize v5, preinstalled on these machines as /usr/bin/kubectl) is required to render deploy/k8s: " + ex.Message, ex);
        }
        using var process = started ?? throw new InvalidOperationException("kubectl did not start");
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(1)))
        {
            process.Kill();
            throw new TimeoutException($"kubectl kustomize {directory} did not finish in a minute");
        }
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"kubectl kustomize {directory} exited {process.ExitCode}: {error.Result}");
        return output.Result;
    }

    public static IEnumerable<T> OfKind<T>(this IEnumerable<object> objects) => objects.OfType<T>();

    /// <summary>Pod templates of every workload kind we use, with the workload's kind/name for messages.</summary>
    public static IEnumerable<(string Workload, V1PodTemplateSpec Template)> PodTemplates(this IEnumerable<object> objects)
    {
        foreach (var o in objects)
        {
            switch (o)
            {
                case V1Deployment d:
                    yield return ($"Deployment/{d.Metadata.Name}", d.Spec.Template);
                    break;
                case V1StatefulSet s:
                    yield return ($"StatefulSet/{s.Metadata.Name}", s.Spec.Template);
                    break;
                case V1DaemonSet ds:
                    yield return ($"DaemonSet/{ds.Metadata.Name}", ds.Spec.Template);
                    break;
                case V1Job j:
                    yield return ($"Job/{j.Metadata.Name}", j.Spec.Template);
                    break;
            }
        }
    }

    public static IEnumerable<V1Container> AllContainers(this V1PodSpec spec) =>
        (spec.InitContainers ?? []).Concat(spec.Containers ?? []);

    /// <summary>The Coordinator's Deployment (there is exactly one in every kustomization).</summary>
    public static V1Deployment Coordinator(this IEnumerable<object> objects) =>
        Assert.Single(objects.OfType<V1Deployment>(), d => d.Metadata.Name == "msdfleet-coordinator");

    public static bool Selects(IDictionary<string, string>? selector, IDictionary<string, string>? labels) =>
        selector is { Count: > 0 } && labels is not null && selector.All(kv => labels.TryGetValue(kv.Key, out var v) && v == kv.Value);

    public static bool Selects(V1LabelSelector? selector, IDictionary<string, string>? labels)
    {
        if (selector is null)
            return false;
        if (selector.MatchExpressions is { Count: > 0 })
            throw new NotSupportedException("matchExpressions: extend the policy tests before using them");
        // An empty selector ({}) selects every pod of the namespace.
        return selector.MatchLabels is not { Count: > 0 } || Selects(selector.MatchLabels, labels);
    }

    private static Dictionary<string, Type> BuildTypeMap()
    {
        var map = new Dictionary<string, Type>(StringComparer.Ordinal);
        foreach (var type in typeof(V1Pod).Assembly.GetTypes().Append(typeof(ServiceMonitor)))
        {
            if (type.GetCustomAttribute<KubernetesEntityAttribute>() is not { Kind.Length: > 0 } entity || type.Name.EndsWith("List", StringComparison.Ordinal))
                continue;
            var apiVersion = string.IsNullOrEmpty(entity.Group) ? entity.ApiVersion : $"{entity.Group}/{entity.ApiVersion}";
            map[$"{apiVersion}/{entity.Kind}"] = type;
        }
        return map;
    }
}
