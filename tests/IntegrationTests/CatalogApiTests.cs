using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>Upload, list, ranged download, conflict, replace, integrity check and delete of images.</summary>
public sealed class CatalogApiTests : IAsyncLifetime
{
    private CoordinatorInstance _coordinator = null!;
    private readonly string _work = TestPaths.NewTempDir("catalog");

    public async Task InitializeAsync() => _coordinator = await CoordinatorInstance.StartAsync();

    public async Task DisposeAsync()
    {
        await _coordinator.DisposeAsync();
        Directory.Delete(_work, true);
    }

    [Fact]
    public async Task UploadDownload_RangesAndWholeImage_BitIdentical()
    {
        var (path, sha256) = await TestImages.CreateAsync(_work, "a.img", 5 * 1024 * 1024 + 7, seed: 10);
        var upload = await _coordinator.UploadAsync("a.img", path);
        Assert.Equal(5 * 1024 * 1024 + 7, upload["size"]!.GetValue<long>());
        Assert.Equal(upload["size"]!.GetValue<long>(), upload["newBytes"]!.GetValue<long>());
        var bytes = await File.ReadAllBytesAsync(path);

        var whole = await _coordinator.Http.GetByteArrayAsync("api/v1/images/a.img");
        Assert.Equal(sha256, Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(whole)));

        foreach (var (from, to) in new[] { (0L, 0L), (65535L, 200000L), (1_000_000L, 5L * 1024 * 1024 + 6) })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "api/v1/images/a.img");
            request.Headers.Range = new RangeHeaderValue(from, to);
            using var response = await _coordinator.Http.SendAsync(request);
            Assert.Equal(HttpStatusCode.PartialContent, response.StatusCode);
            Assert.Equal(bytes.AsSpan((int)from, (int)(to - from + 1)).ToArray(), await response.Content.ReadAsByteArrayAsync());
        }
        using var beyond = new HttpRequestMessage(HttpMethod.Get, "api/v1/images/a.img");
        beyond.Headers.Range = new RangeHeaderValue(bytes.Length + 10, null);
        using var unsatisfiable = await _coordinator.Http.SendAsync(beyond);
        Assert.Equal(HttpStatusCode.RequestedRangeNotSatisfiable, unsatisfiable.StatusCode);

        var list = JsonNode.Parse(await _coordinator.Http.GetStringAsync("api/v1/images"))!.AsArray();
        Assert.Equal("a.img", Assert.Single(list)!["name"]!.GetValue<string>());
    }

    [Fact]
    public async Task Upload_ExistingName_409UnlessReplace_AndSecondCopyStoresNoNewBytes()
    {
        var (path, _) = await TestImages.CreateAsync(_work, "b.img", 2 * 1024 * 1024, seed: 11);
        var first = await _coordinator.UploadAsync("b.img", path);
        using (var again = await _coordinator.Http.PutAsync("api/v1/images/b.img", new ByteArrayContent(await File.ReadAllBytesAsync(path))))
        {
            Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
            Assert.Contains("image-exists", await again.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
        using var replaced = await _coordinator.Http.PutAsync("api/v1/images/b.img?replace=true", new ByteArrayContent(await File.ReadAllBytesAsync(path)));
        Assert.Equal(HttpStatusCode.OK, replaced.StatusCode);
        var body = JsonNode.Parse(await replaced.Content.ReadAsStringAsync())!;
        Assert.Equal(first["digest"]!.GetValue<string>(), body["digest"]!.GetValue<string>());
        Assert.Equal(0, body["newBytes"]!.GetValue<long>());
    }

    [Fact]
    public async Task Upload_WrongExpectedSha256_422AndNotInCatalog()
    {
        using var response = await _coordinator.Http.PutAsync("api/v1/images/c.img?sha256=" + new string('0', 64), new ByteArrayContent(new byte[100_000]));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.StatusCode);
        Assert.Contains("sha256-mismatch", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        using var get = await _coordinator.Http.GetAsync("api/v1/images/c.img");
        Assert.Equal(HttpStatusCode.NotFound, get.StatusCode);
    }

    [Fact]
    public async Task Delete_InUse_409_ThenAfterRelease_204()
    {
        await _coordinator.CreateAgentSecretAsync("holder");
        var (path, _) = await TestImages.CreateAsync(_work, "d.img", 100_000, seed: 12);
        await _coordinator.UploadAsync("d.img", path);
        using (var set = await _coordinator.SetDriveAsync("holder", 0, new { image = "d.img", mode = "flash" }))
            Assert.True(set.IsSuccessStatusCode);
        using (var refused = await _coordinator.Http.DeleteAsync("api/v1/images/d.img"))
        {
            Assert.Equal(HttpStatusCode.Conflict, refused.StatusCode);
            Assert.Contains("holder", await refused.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
        using (var clear = await _coordinator.SetDriveAsync("holder", 0, new { image = (string?)null }))
            Assert.True(clear.IsSuccessStatusCode, await clear.Content.ReadAsStringAsync());
        using (var deleted = await _coordinator.Http.DeleteAsync("api/v1/images/d.img"))
            Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        using var gone = await _coordinator.Http.GetAsync("api/v1/images/d.img");
        Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
    }
}
