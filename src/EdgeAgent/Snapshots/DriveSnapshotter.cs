using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using MsdFleet.EdgeAgent.Gadget;
using MsdFleet.EdgeAgent.Mqtt;
using MsdFleet.EdgeAgent.Storage;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent.Snapshots;

/// <summary>
/// Saves a writable drive's working copy as a new catalog image ("save back"). The drive is held (the
/// planner leaves it alone) from the moment the snapshot starts until it ends, then the reconcile loop
/// attaches it again. Steps: a gentle eject (refused while the server holds the medium — saving a
/// filesystem the server is writing would save it torn); cut the copy with the Coordinator's chunker;
/// the push protocol sends only the chunks the catalog lacks; commit under the requested name. Only then
/// is the copy recorded as saved. A kill at any point leaves nothing committed half-way: the request is
/// still in the desired state, so the next start runs it again and the Coordinator answers which chunks
/// it already has. The copy itself is only ever read. Uploads share the pulls' bandwidth cap.
/// </summary>
public sealed partial class DriveSnapshotter(IGadgetDriver gadget, WorkingCopyStore copies, HttpClient http, IAgentPublisher publisher,
    Transfers.BandwidthThrottle throttle, TimeProvider time, ILogger<DriveSnapshotter> logger)
{
    private const int BatchBytes = 16 * 1024 * 1024;
    private const int Attempts = 4;
    private readonly ConcurrentDictionary<int, SnapshotReport> _running = new();
    private readonly ConcurrentDictionary<int, byte> _held = new();

    /// <summary>Drives a snapshot owns right now.</summary>
    public IReadOnlySet<int> HeldDrives => _held.Keys.ToHashSet();

    /// <summary>Holds <paramref name="drive"/> for a snapshot; false when one holds it already.</summary>
    public bool TryHold(int drive) => _held.TryAdd(drive, 0);

    public void Release(int drive) => _held.TryRemove(drive, out _);

    /// <summary>The running snapshot of a drive, or how the last one ended.</summary>
    public SnapshotReport? Status(int drive, WorkingCopy? copy) =>
        _running.TryGetValue(drive, out var running) ? running
        : copy?.LastSnapshot is { } last ? new SnapshotReport
        {
            Id = last.Id, State = last.Succeeded ? SnapshotState.Succeeded : SnapshotState.Failed, ImageName = last.Name, ImageDigest = last.ImageDigest,
            Error = last.Error, BytesDone = last.BytesTotal, BytesTotal = last.BytesTotal, BytesSent = last.BytesSent,
        }
        : null;

    /// <summary>Runs one snapshot of a held drive; releases the hold when done. Failures are recorded, not thrown.</summary>
    public async Task RunAsync(int drive, SnapshotRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var report = new SnapshotReport { Id = request.Id, State = SnapshotState.Running, ImageName = request.Name };
        _running[drive] = report;
        try
        {
            var copy = copies.Get(drive) ?? throw new SnapshotException($"Drive {drive} has no working copy to save.");
            await DetachGentlyAsync(drive, cancellationToken);
            var cleanMtime = new FileInfo(copy.Path).LastWriteTimeUtc.Ticks;
            var (digest, total, sent) = await PushAsync(drive, copy, request, report, cancellationToken);
            var outcome = new SnapshotOutcome(request.Id, request.Name, true, digest, null, total, sent);
            await copies.RecordSnapshotAsync(drive, outcome, cleanMtime, cancellationToken);
            Log.Saved(logger, drive, request.Name, digest, sent, total);
            await publisher.PublishEventAsync(new AgentEvent
            {
                Kind = AgentEventKind.SnapshotCompleted, Drive = drive, ImageDigest = digest, BytesDone = total, BytesTotal = total,
                Message = $"Drive {drive} saved as '{request.Name}' ({sent} of {total} bytes sent)",
            }, cancellationToken);
        }
        catch (Exception ex) when (ex is SnapshotException or GadgetException or IOException or HttpRequestException or UnauthorizedAccessException
                                   && !cancellationToken.IsCancellationRequested)
        {
            Log.Failed(logger, drive, request.Name, ex.Message);
            if (copies.Get(drive) is not null)
                await copies.RecordSnapshotAsync(drive, new SnapshotOutcome(request.Id, request.Name, false, null, ex.Message, report.BytesTotal, report.BytesSent), null, CancellationToken.None);
            await publisher.PublishEventAsync(new AgentEvent { Kind = AgentEventKind.SnapshotFailed, Drive = drive, Message = ex.Message }, CancellationToken.None);
        }
        finally
        {
            _running.TryRemove(drive, out _);
            Release(drive);
        }
    }

    private async Task DetachGentlyAsync(int drive, CancellationToken cancellationToken)
    {
        var state = (await gadget.ReadDrivesAsync(cancellationToken)).FirstOrDefault(d => d.Index == drive);
        if (state is not { HasMedium: true })
            return;
        try
        {
            await gadget.EjectGentlyAsync(drive, cancellationToken);
        }
        catch (GadgetBusyException ex)
        {
            throw new SnapshotException(
                $"The server holds drive {drive} (it has it mounted or locked), so its writes cannot be saved consistently. " +
                "Unmount or eject the drive on the server, then ask for the snapshot again.", ex);
        }
    }

    private async Task<(string Digest, long Total, long Sent)> PushAsync(int drive, WorkingCopy copy, SnapshotRequest request, SnapshotReport report,
        CancellationToken cancellationToken)
    {
        ImageManifest manifest;
        long[] offsets;
        await using (var file = new FileStream(copy.Path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan | FileOptions.Asynchronous))
        {
            var total = file.Length;
            var lastEvent = time.GetTimestamp();
            (manifest, offsets) = await ManifestBuilder.BuildAsync(file, done =>
            {
                _running[drive] = report = report with { BytesDone = done, BytesTotal = total };
                if (time.GetElapsedTime(lastEvent) >= TimeSpan.FromSeconds(1))
                {
                    lastEvent = time.GetTimestamp();
                    _ = publisher.PublishEventAsync(new AgentEvent { Kind = AgentEventKind.SnapshotProgress, Drive = drive, BytesDone = done, BytesTotal = total,
                        Message = "cutting" }, cancellationToken);
                }
            }, cancellationToken);
        }
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await SendAsync(drive, copy, request, manifest, offsets, report, cancellationToken);
            }
            catch (HttpRequestException ex) when (attempt < Attempts && !cancellationToken.IsCancellationRequested)
            {
                // The Coordinator keeps what arrived: the next attempt sends only what is still missing.
                Log.Retry(logger, drive, attempt, ex.Message);
                await Task.Delay(TimeSpan.FromSeconds(attempt), time, cancellationToken);
            }
        }
    }

    private async Task<(string Digest, long Total, long Sent)> SendAsync(int drive, WorkingCopy copy, SnapshotRequest request, ImageManifest manifest, long[] offsets,
        SnapshotReport report, CancellationToken cancellationToken)
    {
        JsonNode status;
        using (var create = new HttpRequestMessage(HttpMethod.Post, "api/v1/uploads") { Content = new ByteArrayContent(manifest.ToBytes()) })
        {
            create.Content.Headers.ContentType = new MediaTypeHeaderValue("application/vnd.msdfleet.manifest.v1+msgpack");
            using var response = await http.SendAsync(create, cancellationToken);
            status = await ReadAsync(response, "starting the upload", cancellationToken);
        }
        var uploadId = status["uploadId"]!.GetValue<string>();
        var index = manifest.Chunks.Select((c, i) => (c.IdHex, i)).GroupBy(x => x.IdHex).ToDictionary(g => g.Key, g => g.First().i, StringComparer.Ordinal);
        var missing = status["missing"]!.AsArray().Select(m => index[m!.GetValue<string>()]).Order().ToList();
        long sent = 0;
        using var handle = File.OpenHandle(copy.Path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.Asynchronous);
        var body = ArrayPool<byte>.Shared.Rent(BatchBytes + manifest.Chunker.MaxSize + ChunkFrames.HeaderBytes * 1024);
        try
        {
            for (var start = 0; start < missing.Count;)
            {
                var length = 0;
                long batchBytes = 0;
                while (start < missing.Count && (batchBytes == 0 || batchBytes + manifest.Chunks[missing[start]].Length <= BatchBytes)
                       && length + ChunkFrames.HeaderBytes + manifest.Chunks[missing[start]].Length <= body.Length)
                {
                    var i = missing[start++];
                    var chunk = manifest.Chunks[i].Length;
                    ChunkFrames.WriteHeader(body.AsSpan(length), chunk);
                    if (await RandomAccess.ReadAsync(handle, body.AsMemory(length + ChunkFrames.HeaderBytes, chunk), offsets[i], cancellationToken) != chunk)
                        throw new SnapshotException($"The working copy of drive {drive} changed size while it was being saved.");
                    length += ChunkFrames.HeaderBytes + chunk;
                    batchBytes += chunk;
                }
                // The agent's bandwidth cap holds for uploads too: a site link is one link.
                await throttle.WaitAsync((int)batchBytes, cancellationToken);
                using var request2 = new HttpRequestMessage(HttpMethod.Post, $"api/v1/uploads/{uploadId}/chunks") { Content = new ByteArrayContent(body, 0, length) };
                using (var response = await http.SendAsync(request2, cancellationToken))
                    await ReadAsync(response, "sending chunks", cancellationToken);
                sent += batchBytes;
                _running[drive] = report = report with { BytesSent = sent };
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(body);
        }
        using var commit = await http.PostAsJsonAsync($"api/v1/uploads/{uploadId}/commit", new CommitRequest(request.Name), AgentJsonContext.Default.CommitRequest, cancellationToken);
        var entry = await ReadAsync(commit, "committing the image", cancellationToken);
        return (entry["digest"]!.GetValue<string>(), manifest.Size, sent);
    }

    /// <summary>The JSON answer, or the Coordinator's ProblemDetails as a failure (4xx are final; 5xx and transport errors are retried).</summary>
    private static async Task<JsonNode> ReadAsync(HttpResponseMessage response, string what, CancellationToken cancellationToken)
    {
        var text = await response.Content.ReadAsStringAsync(cancellationToken);
        if (response.IsSuccessStatusCode)
            return JsonNode.Parse(text) ?? throw new SnapshotException($"The Coordinator answered {what} with an empty body.");
        var detail = text.Length > 0 && text[0] == '{' ? JsonNode.Parse(text)?["detail"]?.GetValue<string>() ?? text : text;
        if ((int)response.StatusCode >= 500)
            throw new HttpRequestException($"The Coordinator failed {what} ({(int)response.StatusCode}): {detail}", null, response.StatusCode);
        throw new SnapshotException(response.StatusCode == HttpStatusCode.Forbidden
            ? $"The Coordinator refused {what} (403): {detail}"
            : $"The Coordinator refused {what} ({(int)response.StatusCode}): {detail}");
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Drive {Drive} saved as '{Name}' ({Digest}): {Sent} of {Total} bytes sent")]
        public static partial void Saved(ILogger logger, int drive, string name, string digest, long sent, long total);

        [LoggerMessage(2, LogLevel.Error, "Snapshot of drive {Drive} as '{Name}' failed: {Reason}")]
        public static partial void Failed(ILogger logger, int drive, string name, string reason);

        [LoggerMessage(3, LogLevel.Warning, "Snapshot upload of drive {Drive} failed (attempt {Attempt}): {Reason}; resuming")]
        public static partial void Retry(ILogger logger, int drive, int attempt, string reason);
    }
}

/// <summary>A snapshot failed for a reason the operator must see as it is.</summary>
public sealed class SnapshotException : Exception
{
    public SnapshotException() { }
    public SnapshotException(string message) : base(message) { }
    public SnapshotException(string message, Exception innerException) : base(message, innerException) { }
}
