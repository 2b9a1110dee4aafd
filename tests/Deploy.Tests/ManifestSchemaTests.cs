using k8s.Models;
using MsdFleet.Deploy.Tests.Infrastructure;

namespace MsdFleet.Deploy.Tests;

/// <summary>
/// Every kustomization renders, and what it renders is what an API server would accept field by field:
/// kubectl passes an unknown or misspelt field through silently, the client's models refuse it.
/// </summary>
public sealed class ManifestSchemaTests
{
    public static TheoryData<string> Kustomizations() => [.. Manifests.Kustomizations];

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void Kustomization_RendersAndLoadsStrictly_IntoTypedModels(string kustomization)
    {
        var objects = Manifests.Load(kustomization);

        Assert.NotEmpty(objects);
        // The loader found a model for every apiVersion/kind (an unknown kind throws), so each is a typed object.
        Assert.All(objects, o => Assert.IsAssignableFrom<k8s.IKubernetesObject<V1ObjectMeta>>(o));
        Assert.Single(objects.OfType<V1Deployment>(), d => d.Metadata.Name == "msdfleet-coordinator");
    }

    [Fact]
    public void Overlays_RenderWhatTheyPromise()
    {
        Assert.Equal(["msdfleet-mosquitto", "msdfleet-postgres", "msdfleet-s3"],
            Manifests.Load("overlays/dev").OfType<V1StatefulSet>().Select(s => s.Metadata.Name).Order(StringComparer.Ordinal));
        Assert.All(Manifests.Load("overlays/dev").OfType<V1StatefulSet>(), s => Assert.NotEmpty(s.Spec.VolumeClaimTemplates));
        Assert.Single(Manifests.Load("overlays/prod").OfType<ServiceMonitor>());
        Assert.Empty(Manifests.Load("overlays/prod").OfType<V1StatefulSet>());
        Assert.All(Manifests.Kustomizations.Where(k => k != "base"), k =>
            Assert.All(Manifests.Load(k), o => Assert.False(string.IsNullOrEmpty(((IMetadata<V1ObjectMeta>)o).Metadata.NamespaceProperty) && o is not V1Namespace,
                $"{k}: {o.GetType().Name} {((IMetadata<V1ObjectMeta>)o).Metadata.Name} has no namespace")));
    }

    [Fact]
    public void StrictLoad_RefusesAMisspeltField_ThatANonStrictLoadAccepts()
    {
        var yaml = Manifests.Render("base");
        var typo = InsertBeside(yaml, "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true");

        Assert.NotNull(Manifests.LoadYaml(typo, strict: false)); // the document is fine YAML; only the field is wrong
        var error = Assert.ThrowsAny<Exception>(() => Manifests.LoadYaml(typo));
        Assert.Contains("readOnlyRootFileSystem", error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void StrictLoad_RefusesAnUnknownServiceMonitorField()
    {
        var yaml = InsertBeside(Manifests.Render("overlays/prod"), "scrapeTimeout: 10s", "scrapeTimout: 10s");

        var error = Assert.ThrowsAny<Exception>(() => Manifests.LoadYaml(yaml));
        Assert.Contains("scrapeTimout", error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void StrictLoad_RefusesADuplicateKey()
    {
        var yaml = InsertBeside(Manifests.Render("base"), "replicas: 2", "replicas: 5");

        Assert.ThrowsAny<Exception>(() => Manifests.LoadYaml(yaml));
    }

    /// <summary>Adds <paramref name="added"/> as a sibling line of the first line holding <paramref name="existing"/>.</summary>
    private static string InsertBeside(string yaml, string existing, string added)
    {
        var lines = yaml.Split('\n').ToList();
        var index = lines.FindIndex(l => l.TrimStart() == existing);
        Assert.True(index >= 0, $"no line '{existing}' in the rendered YAML");
        var indent = lines[index][..(lines[index].Length - lines[index].TrimStart().Length)];
        lines.Insert(index + 1, indent + added);
        return string.Join('\n', lines);
    }
}
