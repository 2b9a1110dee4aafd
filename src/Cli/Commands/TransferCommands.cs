using System.Buffers.Binary;
using System.ComponentModel;
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;
using Spectre.Console;
using Spectre.Console.Cli;

namespace MsdFleet.Cli.Commands;

public sealed class ImagePushSettings : GlobalSettings
{
    [CommandArgument(0, "<FILE>")]
    public string File { get; init; } = "";

    [CommandOption("--name <NAME>")]
    [Description("Catalog name (default: the file name).")]
    public string? Name { get; init; }

    [CommandOption("--replace")]
    [Description("Point an existing name at this image.")]
    public bool Replace { get; init; }

    [CommandOption("--limit-rate <BYTES_PER_SECOND>")]
    [Description("Cap the upload rate (suffixes K, M, G), like curl --limit-rate.")]
    public string? LimitRate { get; init; }

    public long RateLimit => Rates.Parse(LimitRate);

    public override ValidationResult Validate() =>
        !System.IO.File.Exists(File) ? ValidationResult.Error($"No file '{File}'.")
        : Rates.TryParse(LimitRate, out _) ? ValidationResult.Success() : ValidationResult.Error($"--limit-rate '{LimitRate}' is not a rate like 10M.");
}

/// <summary>
/// <c>msdctl image push FILE</c>: chunks the file here with the Coordinator's own FastCDC parameters,
/// sends the manifest, then only the chunks the store lacks (~16 MiB per request, three in flight), then commits. An
/// interrupted push is resumed by running it again: the Coordinator answers what is still missing.
/// </summary>
public sealed class ImagePushCommand : AsyncCommand<ImagePushSettings>
{
    private const int BatchBytes = 16 * 1024 * 1024;

    public override async Task<int> ExecuteAsync(CommandContext context, ImagePushSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        var name = settings.Name ?? Path.GetFileName(settings.File);
        var interactive = !settings.Json && !Console.IsOutputRedirected;
        var size = new FileInfo(settings.File).Length;
        var clock = Stopwatch.StartNew();
        ImageManifest? manifest = null;
        long[]? offsets = null;
        JsonNode? status = null;
        long sent = 0, toSend = 0;
        JsonNode? entry = null;
        TimeSpan chunked = default, uploaded = default;

        async Task RunAsync(ProgressTask? hashing, ProgressTask? uploading)
        {
            (manifest, offsets) = await ChunkAsync(settings.File, size, done => hashing?.Value(done), cancellationToken);
            hashing?.StopTask();
            chunked = clock.Elapsed;
            using (var create = new HttpRequestMessage(HttpMethod.Post, "api/v1/uploads") { Content = new ByteArrayContent(manifest.ToBytes()) })
            {
                create.Content.Headers.ContentType = new MediaTypeHeaderValue("application/vnd.msdfleet.manifest.v1+msgpack");
                using var response = await client.SendAsync(create, cancellationToken);
                status = await response.Content.ReadFromJsonAsync<JsonNode>(cancellationToken);
            }
            var uploadId = status!["uploadId"]!.GetValue<string>();
            var index = manifest.Chunks.Select((c, i) => (c.IdHex, i)).GroupBy(x => x.IdHex).ToDictionary(g => g.Key, g => g.First().i, StringComparer.Ordinal);
            var missing = status["missing"]!.AsArray().Select(m => index[m!.GetValue<string>()]).Order().ToList();
            toSend = missing.Sum(i => (long)manifest.Chunks[i].Length);
            if (uploading is not null)
            {
                uploading.MaxValue = Math.Max(1, toSend);
                if (toSend == 0)
                    uploading.Description = "already stored";
            }
            var throttle = new Throttle(settings.RateLimit);
            using var handle = File.OpenHandle(settings.File, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.Asynchronous);
            // Batches of ~16 MiB (one pack each on the Coordinator), sent one after another in image order, so
            // the Coordinator hashes the whole image as the bytes arrive instead of reading it back at commit;
            // the next batch is read from the file while the current one is on the wire (two reused buffers).
            var bodies = System.Threading.Channels.Channel.CreateBounded<(byte[] Body, int Length, long Bytes)>(1);
            var spare = System.Threading.Channels.Channel.CreateBounded<byte[]>(2);
            var maxBody = BatchBytes + ChunkerParameters.Default.MaxSize + ChunkFrames.HeaderBytes * (BatchBytes / ChunkerParameters.Default.MinSize + 1);
            spare.Writer.TryWrite(new byte[maxBody]);
            spare.Writer.TryWrite(new byte[maxBody]);
            var reader = Task.Run(async () =>
            {
                try
                {
                    for (var start = 0; start < missing.Count;)
                    {
                        var body = await spare.Reader.ReadAsync(cancellationToken);
                        var pos = 0;
                        long bytes = 0;
                        while (start < missing.Count && (bytes == 0 || bytes + manifest.Chunks[missing[start]].Length <= BatchBytes))
                        {
                            var i = missing[start++];
                            var length = manifest.Chunks[i].Length;
                            ChunkFrames.WriteHeader(body.AsSpan(pos), length);
                            if (await RandomAccess.ReadAsync(handle, body.AsMemory(pos + ChunkFrames.HeaderBytes, length), offsets[i], cancellationToken) != length)
                                throw new CliException(ExitCodes.Failure, $"{settings.File} changed while it was being pushed.");
                            pos += ChunkFrames.HeaderBytes + length;
                            bytes += length;
                        }
                        await bodies.Writer.WriteAsync((body, pos, bytes), cancellationToken);
                    }
                    bodies.Writer.Complete();
                }
                catch (Exception ex)
                {
                    bodies.Writer.TryComplete(ex);
                }
            }, cancellationToken);
            await foreach (var (body, length, bytes) in bodies.Reader.ReadAllAsync(cancellationToken))
            {
                await throttle.WaitAsync(length, cancellationToken);
                using (var request = new HttpRequestMessage(HttpMethod.Post, $"api/v1/uploads/{uploadId}/chunks") { Content = new ByteArrayContent(body, 0, length) })
                    (await client.SendAsync(request, cancellationToken)).Dispose();
                spare.Writer.TryWrite(body);
                uploading?.Increment(bytes);
                sent += bytes;
            }
            await reader;
            uploaded = clock.Elapsed;
            uploading?.Value(uploading.MaxValue);
            entry = await client.SendJsonAsync(HttpMethod.Post, $"api/v1/uploads/{uploadId}/commit", new { name, replace = settings.Replace }, cancellationToken);
        }

        if (interactive)
        {
            await AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new DownloadedColumn(),
                    new TransferSpeedColumn(), new RemainingTimeColumn(), new SpinnerColumn())
                .StartAsync(async ctx => await RunAsync(ctx.AddTask("chunking", maxValue: Math.Max(1, size)), ctx.AddTask("uploading", maxValue: 1)));
        }
        else
        {
            await RunAsync(null, null);
        }
        var result = new
        {
            name,
            digest = entry!["digest"]!.GetValue<string>(),
            size,
            sha256 = entry["sha256"]!.GetValue<string>(),
            chunks = manifest!.Chunks.Count,
            sentBytes = sent,
            alreadyStoredBytes = size - toSend,
            seconds = Math.Round(clock.Elapsed.TotalSeconds, 2),
            // Where the time went: reading and hashing the file, sending what was missing, the commit (server-side checks).
            chunkSeconds = Math.Round(chunked.TotalSeconds, 2),
            sendSeconds = Math.Round((uploaded - chunked).TotalSeconds, 2),
            commitSeconds = Math.Round((clock.Elapsed - uploaded).TotalSeconds, 2),
        };
        if (settings.Json)
            Output.Json(result);
        else
            AnsiConsole.MarkupLineInterpolated(
                $"Pushed [bold]{name}[/] {result.digest[..19]}…: sent {Output.Bytes(sent)}, {Output.Bytes(result.alreadyStoredBytes)} already stored, {result.seconds} s.");
        return ExitCodes.Ok;
    }

    private static async Task<(ImageManifest, long[])> ChunkAsync(string path, long size, Action<long> progress, CancellationToken ct)
    {
        await using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan | FileOptions.Asynchronous);
        var (manifest, offsets) = await ManifestBuilder.BuildAsync(file, progress, ct);
        if (manifest.Size != size)
            throw new CliException(ExitCodes.Failure, $"{path} changed while it was read ({manifest.Size} bytes read, {size} expected).");
        return (manifest, offsets);
    }
}

public sealed class ImagePullSettings : GlobalSettings
{
    [CommandArgument(0, "<NAME>")]
    public string Name { get; init; } = "";

    [CommandOption("-o|--output <FILE>")]
    [Description("Where to write (default: the image name in the current folder).")]
    public string? Output { get; init; }
}

/// <summary><c>msdctl image pull NAME</c>: ranged download into FILE.part (resumed when present), SHA-256 checked, then renamed.</summary>
public sealed class ImagePullCommand : AsyncCommand<ImagePullSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, ImagePullSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        var image = await client.FindImageAsync(settings.Name, cancellationToken);
        var size = image["size"]!.GetValue<long>();
        var expected = image["sha256"]!.GetValue<string>();
        var target = settings.Output ?? Path.GetFileName(settings.Name);
        var part = target + ".part";
        var interactive = !settings.Json && !Console.IsOutputRedirected;
        var resumedFrom = File.Exists(part) ? new FileInfo(part).Length : 0;
        if (resumedFrom > size)
            resumedFrom = 0;

        async Task RunAsync(ProgressTask? task)
        {
            await using var output = new FileStream(part, resumedFrom > 0 ? FileMode.Open : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20, FileOptions.Asynchronous);
            output.SetLength(resumedFrom);
            output.Position = resumedFrom;
            task?.Value(resumedFrom);
            if (resumedFrom < size)
            {
                var request = new HttpRequestMessage(HttpMethod.Get, $"api/v1/images/{Uri.EscapeDataString(settings.Name)}");
                request.Headers.Range = new RangeHeaderValue(resumedFrom, null);
                using var response = await client.SendAsync(request, cancellationToken, HttpCompletionOption.ResponseHeadersRead);
                await using var body = await response.Content.ReadAsStreamAsync(cancellationToken);
                var buffer = new byte[1 << 20];
                int n;
                while ((n = await body.ReadAsync(buffer, cancellationToken)) > 0)
                {
                    await output.WriteAsync(buffer.AsMemory(0, n), cancellationToken);
                    task?.Increment(n);
                }
            }
            await output.FlushAsync(cancellationToken);
            output.Flush(true);
        }

        if (interactive)
        {
            await AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new DownloadedColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
                .StartAsync(ctx => RunAsync(ctx.AddTask($"pulling {settings.Name}", maxValue: Math.Max(1, size))));
        }
        else
        {
            await RunAsync(null);
        }
        if (new FileInfo(part).Length != size)
            throw new CliException(ExitCodes.VerificationFailed, $"Got {new FileInfo(part).Length} bytes of {size}; run the pull again to resume.");
        string actual;
        await using (var check = new FileStream(part, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan | FileOptions.Asynchronous))
            actual = Convert.ToHexStringLower(await SHA256.HashDataAsync(check, cancellationToken));
        if (actual != expected)
        {
            File.Delete(part);
            throw new CliException(ExitCodes.VerificationFailed, $"SHA-256 mismatch ({actual}, expected {expected}); the partial file was removed.");
        }
        File.Move(part, target, true);
        if (settings.Json)
            MsdFleet.Cli.Output.Json(new { name = settings.Name, file = Path.GetFullPath(target), size, sha256 = actual, resumedFrom });
        else
            AnsiConsole.MarkupLineInterpolated($"Pulled [bold]{settings.Name}[/] to {target} ({MsdFleet.Cli.Output.Bytes(size)}, SHA-256 verified{(resumedFrom > 0 ? $", resumed at {MsdFleet.Cli.Output.Bytes(resumedFrom)}" : "")}).");
        return ExitCodes.Ok;
    }
}

internal static class Rates
{
    public static bool TryParse(string? text, out long rate)
    {
        rate = 0;
        if (string.IsNullOrEmpty(text))
            return true;
        var multiplier = char.ToUpperInvariant(text[^1]) switch { 'K' => 1024L, 'M' => 1024L * 1024, 'G' => 1024L * 1024 * 1024, _ => 1L };
        var digits = multiplier == 1 ? text : text[..^1];
        if (!long.TryParse(digits, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n) || n <= 0)
            return false;
        rate = n * multiplier;
        return true;
    }

    public static long Parse(string? text) => TryParse(text, out var rate) ? rate : 0;
}

/// <summary>Keeps the average rate at or under a cap (0 = none).</summary>
internal sealed class Throttle(long bytesPerSecond)
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private long _bytes;

    public async Task WaitAsync(long bytes, CancellationToken ct)
    {
        if (bytesPerSecond <= 0)
            return;
        var total = Interlocked.Add(ref _bytes, bytes);
        var due = TimeSpan.FromSeconds((double)total / bytesPerSecond) - _clock.Elapsed;
        if (due > TimeSpan.Zero)
            await Task.Delay(due, ct);
    }
}
