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
/// <c>msdctl image push FILE</c>: chunks the file here with the Coordinator's own FastCDC parameters and
/// streams it (<see cref="StreamedPush"/>): each ~16 MiB part is declared as soon as it is cut, and only the
/// chunks the store lacks are sent, while the next part is being read and hashed. An interrupted push is resumed
/// by running it again: the Coordinator answers that what was already sent is stored.
/// </summary>
public sealed class ImagePushCommand : AsyncCommand<ImagePushSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, ImagePushSettings settings, CancellationToken cancellationToken)
    {
        using var client = settings.Client();
        var name = settings.Name ?? Path.GetFileName(settings.File);
        var interactive = !settings.Json && !Console.IsOutputRedirected;
        var size = new FileInfo(settings.File).Length;
        var clock = Stopwatch.StartNew();
        StreamedPush? push = null;
        JsonNode? entry = null;

        async Task RunAsync(ProgressTask? reading, ProgressTask? uploading)
        {
            long sent = 0, stored = 0;
            push = new StreamedPush(client, new Throttle(settings.RateLimit), done => reading?.Value(done), (bytes, wasSent) =>
            {
                if (wasSent)
                    sent += bytes;
                else
                    stored += bytes;
                if (uploading is null)
                    return;
                uploading.Increment(bytes);
                uploading.Description = $"sending ({Output.Bytes(stored)} already stored)";
            });
            entry = await push.RunAsync(settings.File, name, settings.Replace, clock, cancellationToken);
            reading?.Value(size);
            uploading?.Value(uploading.MaxValue);
        }

        if (interactive)
        {
            await AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new DownloadedColumn(),
                    new TransferSpeedColumn(), new RemainingTimeColumn(), new SpinnerColumn())
                .StartAsync(async ctx => await RunAsync(ctx.AddTask("reading", maxValue: Math.Max(1, size)), ctx.AddTask("sending", maxValue: Math.Max(1, size))));
        }
        else
        {
            await RunAsync(null, null);
        }
        if (push!.Size != size)
            throw new CliException(ExitCodes.Failure, $"{settings.File} changed while it was pushed ({push.Size} bytes read, {size} expected); push it again.");
        var result = new
        {
            name,
            digest = entry!["digest"]!.GetValue<string>(),
            size,
            sha256 = entry["sha256"]!.GetValue<string>(),
            chunks = push.Chunks,
            sentBytes = push.SentBytes,
            alreadyStoredBytes = size - push.SentBytes,
            seconds = Math.Round(clock.Elapsed.TotalSeconds, 2),
            // When the file was read and hashed to its end, when the last chunk was acknowledged, how long the commit
            // (the Coordinator's whole-image check) took; reading and sending overlap.
            readDoneSeconds = Math.Round(push.CutDone.TotalSeconds, 2),
            sendDoneSeconds = Math.Round(push.SendDone.TotalSeconds, 2),
            commitSeconds = Math.Round((clock.Elapsed - push.SendDone).TotalSeconds, 2),
        };
        if (settings.Json)
            Output.Json(result);
        else
            AnsiConsole.MarkupLineInterpolated(
                $"Pushed [bold]{name}[/] {result.digest[..19]}…: sent {Output.Bytes(push.SentBytes)}, {Output.Bytes(result.alreadyStoredBytes)} already stored, {result.seconds} s.");
        return ExitCodes.Ok;
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
