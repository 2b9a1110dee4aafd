using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using MsdFleet.IntegrationTests.Infrastructure;

namespace MsdFleet.IntegrationTests;

/// <summary>
/// Save back: a writable drive's working copy becomes a new catalog image whose bytes equal the copy,
/// with only the changed chunks sent; every bad request is refused before the agent is asked; an agent may
/// push only the snapshot it was asked for; and a kill -9 in the middle of the push commits nothing
/// half-made and converges after the restart.
/// </summary>
public sealed class SnapshotTests : IAsyncLifetime
{
    private readonly string _work = TestPaths.NewTempDir("snapshot");

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        Directory.Delete(_work, true);
        return Task.CompletedTask;
    }

    private static JsonObject? Drive(JsonObject agent, int drive) => CoordinatorInstance.Drive(agent, drive);

    private static Task<HttpResponseMessage> SnapshotAsync(CoordinatorInstance coordinator, string agent, int drive, object body) =>
        coordinator.Http.PostAsJsonAsync($"api/v1/agents/{agent}/drives/{drive}/snapshot", body);

    private static async Task<string> ProblemCodeAsync(HttpResponseMessage response) =>
        JsonNode.Parse(await response.Content.ReadAsStringAsync())?["code"]?.GetValue<string>() ?? "(none)";

    private static byte[] RandomBytes(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    [Fact]
    public async Task Snapshot_SavesWorkingCopy_OnlyChangedChunksSent_BadRequestsRefused_AgentConfinedToItsRequest()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var secret = await coordinator.CreateAgentSecretAsync("snap-1");
        var agent = new AgentProcess("snap-1", secret, coordinator, functions: 2);
        await using var _ = agent;
        agent.Start();
        await coordinator.WaitForAgentAsync("snap-1", a => Drive(a, 1) is not null, "online with two drives", diagnostics: () => agent.Log);
        var (path, _) = await TestImages.CreateAsync(_work, "base.img", 16L * 1024 * 1024, seed: 21);
        await coordinator.UploadAsync("base.img", path);

        // A read-only drive has nothing to save.
        (await coordinator.SetDriveAsync("snap-1", 0, new { image = "base.img", mode = "flash", readOnly = true })).EnsureSuccessStatusCode();
        using (var readOnly = await SnapshotAsync(coordinator, "snap-1", 0, new { name = "saved.img" }))
        {
            Assert.Equal(HttpStatusCode.Conflict, readOnly.StatusCode);
            Assert.Equal("drive-read-only", await ProblemCodeAsync(readOnly));
        }
        (await coordinator.SetDriveAsync("snap-1", 0, new { image = "base.img", mode = "flash", readOnly = false })).EnsureSuccessStatusCode();
        await coordinator.WaitForAgentAsync("snap-1", a => Drive(a, 0)?["workingCopy"]?["attached"]?.GetValue<bool>() == true, "working copy attached", diagnostics: () => agent.Log);

        foreach (var (drive, body, status, code) in new (int, object, HttpStatusCode, string)[]
                 {
                     (0, new { name = "../escape" }, HttpStatusCode.BadRequest, "invalid-image-name"),
                     (0, new { }, HttpStatusCode.BadRequest, "invalid-body"),
                     (1, new { name = "saved.img" }, HttpStatusCode.Conflict, "no-working-copy"),
                     (0, new { name = "base.img" }, HttpStatusCode.Conflict, "image-exists"),
                     (9, new { name = "saved.img" }, HttpStatusCode.BadRequest, "invalid-drive"),
                 })
        {
            using var refused = await SnapshotAsync(coordinator, "snap-1", drive, body);
            Assert.Equal(status, refused.StatusCode);
            Assert.Equal(code, await ProblemCodeAsync(refused));
        }

        // The agent's own credentials cannot push anything it was not asked for.
        using (var asAgent = new HttpClient { BaseAddress = coordinator.BaseUrl })
        {
            asAgent.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("snap-1:" + secret)));
            using var push = await asAgent.PostAsync("api/v1/uploads", new ByteArrayContent([0x90]));
            Assert.Equal(HttpStatusCode.Forbidden, push.StatusCode);
        }
        var lun0 = agent.Drive(0, "file");
        agent.HostWrites(0, 5L * 1024 * 1024, RandomBytes(1024 * 1024, seed: 22));
        await coordinator.WaitForAgentAsync("snap-1", a => Drive(a, 0)?["workingCopy"]?["unsavedWrites"]?.GetValue<bool>() == true, "unsaved writes reported", diagnostics: () => agent.Log);
        var copySha = TestImages.Sha256Of(lun0);

        using (var accepted = await SnapshotAsync(coordinator, "snap-1", 0, new { name = "saved.img" }))
            Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);
        var done = await coordinator.WaitForAgentAsync("snap-1", a => Drive(a, 0)?["snapshot"]?["state"]?.GetValue<string>() is "succeeded" or "failed"
                                                                     && Drive(a, 0)?["workingCopy"]?["attached"]?.GetValue<bool>() == true,
            "snapshot finished and drive re-attached", diagnostics: () => agent.Log);
        var snapshot = Drive(done, 0)!["snapshot"]!;
        Assert.True(snapshot["state"]!.GetValue<string>() == "succeeded", CoordinatorInstance.Dump(done));
        // 1 MiB changed: only the chunks overlapping it (at most one 256 KiB chunk of slack on each side) went over the wire.
        var sent = snapshot["bytesSent"]!.GetValue<long>();
        Assert.InRange(sent, 1024 * 1024, 1536 * 1024);
        Assert.False(Drive(done, 0)!["workingCopy"]!["unsavedWrites"]!.GetValue<bool>());

        var downloaded = Path.Combine(_work, "saved.download");
        await using (var body = await coordinator.Http.GetStreamAsync("api/v1/images/saved.img"))
        await using (var file = File.Create(downloaded))
            await body.CopyToAsync(file);
        Assert.Equal(copySha, TestImages.Sha256Of(downloaded));
        Assert.Equal(copySha, TestImages.Sha256Of(agent.Drive(0, "file"))); // the copy was only read

        // Saved: switching the drive to another image no longer needs discardWrites.
        using (var next = await coordinator.SetDriveAsync("snap-1", 0, new { image = "saved.img", mode = "flash", readOnly = true }))
            Assert.True(next.IsSuccessStatusCode, await next.Content.ReadAsStringAsync());
        var audit = await coordinator.Http.GetStringAsync("api/v1/audit");
        Assert.Contains("drive.snapshot", audit, StringComparison.Ordinal);
    }

    [Fact]
    public async Task KillDuringSnapshotPush_RestartConverges_CommittedOnceWithTheCopysBytes()
    {
        await using var coordinator = await CoordinatorInstance.StartAsync();
        var agent = new AgentProcess("snap-2", await coordinator.CreateAgentSecretAsync("snap-2"), coordinator);
        await using var _ = agent;
        agent.Start();
        await coordinator.WaitForAgentAsync("snap-2", a => Drive(a, 0) is not null, "online", diagnostics: () => agent.Log);
        var (path, _) = await TestImages.CreateAsync(_work, "disk.img", 32L * 1024 * 1024, seed: 31);
        await coordinator.UploadAsync("disk.img", path);
        (await coordinator.SetDriveAsync("snap-2", 0, new { image = "disk.img", mode = "flash", readOnly = false })).EnsureSuccessStatusCode();
        await coordinator.WaitForAgentAsync("snap-2", a => Drive(a, 0)?["workingCopy"]?["attached"]?.GetValue<bool>() == true, "working copy attached", diagnostics: () => agent.Log);
        // Most of the disk rewritten by the server: a push of ~24 MiB, two batches at least.
        agent.HostWrites(0, 4L * 1024 * 1024, RandomBytes(24 * 1024 * 1024, seed: 32));
        var copySha = TestImages.Sha256Of(agent.Drive(0, "file"));
        await coordinator.WaitForAgentAsync("snap-2", a => Drive(a, 0)?["workingCopy"]?["unsavedWrites"]?.GetValue<bool>() == true, "unsaved writes", diagnostics: () => agent.Log);

        // The agent's cap (2 MiB/s) holds for snapshot uploads too: the ~25 MiB push takes over 10 s, and the
        // kill lands after the first 16 MiB batch arrived, while the second waits for its turn.
        using (var cap = await coordinator.Http.PutAsJsonAsync("api/v1/agents/snap-2/bandwidth", new { maxBytesPerSecond = 2 * 1024 * 1024 }))
            cap.EnsureSuccessStatusCode();
        await coordinator.WaitForAgentAsync("snap-2", a => a["appliedGeneration"]!.GetValue<long>() == 2, "cap applied", diagnostics: () => agent.Log);
        using (var accepted = await SnapshotAsync(coordinator, "snap-2", 0, new { name = "disk-saved.img" }))
            Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);
        await coordinator.WaitForAgentAsync("snap-2", a => Drive(a, 0)?["snapshot"]?["state"]?.GetValue<string>() == "running"
                                                           && Drive(a, 0)?["snapshot"]?["bytesSent"]?.GetValue<long>() > 0,
            "first batch pushed", TimeSpan.FromMinutes(1), () => agent.Log);
        await agent.KillAsync();
        using (var notYet = await coordinator.Http.GetAsync("api/v1/images/disk-saved.img"))
            Assert.Equal(HttpStatusCode.NotFound, notYet.StatusCode); // killed mid-push: nothing committed
        Assert.Equal(copySha, TestImages.Sha256Of(Path.Combine(agent.StorageRoot, "working", "drive0.img")));

        agent.Start();
        var done = await coordinator.WaitForAgentAsync("snap-2", a => Drive(a, 0)?["snapshot"]?["state"]?.GetValue<string>() is "succeeded" or "failed"
                                                                     && Drive(a, 0)?["workingCopy"]?["attached"]?.GetValue<bool>() == true,
            "snapshot finished after the restart", TimeSpan.FromMinutes(2), () => agent.Log);
        Assert.True(Drive(done, 0)!["snapshot"]!["state"]!.GetValue<string>() == "succeeded", CoordinatorInstance.Dump(done));
        var downloaded = Path.Combine(_work, "disk-saved.download");
        await using (var body = await coordinator.Http.GetStreamAsync("api/v1/images/disk-saved.img"))
        await using (var file = File.Create(downloaded))
            await body.CopyToAsync(file);
        Assert.Equal(copySha, TestImages.Sha256Of(downloaded));
        var images = (await coordinator.Http.GetFromJsonAsync<JsonArray>("api/v1/images"))!;
        Assert.Single(images, i => i!["name"]!.GetValue<string>() == "disk-saved.img");
    }
}
