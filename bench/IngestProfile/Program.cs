using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using MsdFleet.Protocol.Chunking;

// Each stage of an ingest, alone, over the same file (read from the page cache after a warm-up read):
// the CPU seconds this process spent per GiB (user + system, from the kernel's accounting) and the wall
// time. The stages are what the Coordinator's ingest and msdctl's push do to every byte.
// Usage: MsdFleet.IngestProfile FILE [SCRATCH_DIR]
if (args.Length < 1 || !File.Exists(args[0]))
{
    Console.Error.WriteLine("usage: MsdFleet.IngestProfile FILE [SCRATCH_DIR]");
    return 2;
}
var path = args[0];
var scratch = args.Length > 1 ? args[1] : Path.GetTempPath();
Directory.CreateDirectory(scratch);
var size = new FileInfo(path).Length;
var gib = size / (1024.0 * 1024 * 1024);
var chunker = new ContentChunker(ChunkerParameters.Default);
const int Block = 4 * 1024 * 1024;

// Chunk boundaries, found once, for the stages that work per chunk.
var lengths = new List<int>();
await using (var file = Open(path))
    await foreach (var chunk in StreamChunker.ReadChunksAsync(file, chunker))
        lengths.Add(chunk.Length);

Console.WriteLine($"stage profile over {size / 1048576} MiB ({lengths.Count} chunks), {Environment.ProcessorCount} cores, .NET {Environment.Version}");
Console.WriteLine($"  {"stage",-34} {"CPU s/GiB",10} {"wall s/GiB",11} {"MB/s",8}");

await Stage("read (4 MiB reads, page cache)", async () =>
{
    var buffer = new byte[Block];
    await using var file = Open(path);
    while (await file.ReadAsync(buffer) > 0) { }
});
await Stage("read + cut (FastCDC gear)", async () =>
{
    await using var file = Open(path);
    await foreach (var _ in StreamChunker.ReadChunksAsync(file, chunker)) { }
});
await Stage("read + chunk SHA-256 (ids)", () => PerChunk((span) => SHA256.HashData(span)));
await Stage("read + whole-image SHA-256", async () =>
{
    using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    var buffer = new byte[Block];
    await using var file = Open(path);
    int n;
    while ((n = await file.ReadAsync(buffer)) > 0)
        hash.AppendData(buffer, 0, n);
});
var pack = new byte[16 * 1024 * 1024];
var packUsed = 0;
await Stage("read + copy into 16 MiB packs", () => PerChunk((span) =>
{
    if (packUsed + span.Length > pack.Length)
        packUsed = 0;
    span.CopyTo(pack.AsSpan(packUsed));
    packUsed += span.Length;
}));
var target = Path.Combine(scratch, "ingest-profile.tmp");
await Stage("read + write 16 MiB files (no sync)", async () =>
{
    var buffer = new byte[16 * 1024 * 1024];
    await using var file = Open(path);
    var i = 0;
    int n;
    while ((n = await file.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false)) > 0)
    {
        using var handle = File.OpenHandle($"{target}.{i++}", FileMode.Create, FileAccess.Write);
        RandomAccess.Write(handle, buffer.AsSpan(0, n), 0);
    }
});
await Stage("read + write 16 MiB files, O_DIRECT", async () =>
{
    var buffer = GC.AllocateUninitializedArray<byte>(16 * 1024 * 1024 + 4096, pinned: true);
    var aligned = buffer.AsMemory(Native.AlignOffset(buffer), 16 * 1024 * 1024);
    await using var file = Open(path);
    var i = 0;
    int n;
    while ((n = await file.ReadAtLeastAsync(aligned, aligned.Length, throwOnEndOfStream: false)) > 0)
    {
        var fd = Native.Open($"{target}.direct.{i++}", 0x1 | 0x40 | 0x200 | Native.Direct, 0x1A4);
        if (fd < 0)
            throw new IOException("open(O_DIRECT) failed: this filesystem has no O_DIRECT");
        using var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
        RandomAccess.Write(handle, aligned.Span[..(n / 4096 * 4096)], 0);
    }
});
await Stage("syncfs of what was written", () =>
{
    using var handle = File.OpenHandle(target + ".0", FileMode.Open, FileAccess.Read);
    if (OperatingSystem.IsLinux())
        _ = Native.SyncFs((int)handle.DangerousGetHandle());
    return Task.CompletedTask;
});
foreach (var f in Directory.EnumerateFiles(scratch, "ingest-profile.tmp.*"))
    File.Delete(f);
return 0;

async Task PerChunk(Action<ReadOnlySpan<byte>> work)
{
    var buffer = new byte[Block + ChunkerParameters.Default.MaxSize];
    await using var file = Open(path);
    int start = 0, end = 0, index = 0;
    while (index < lengths.Count)
    {
        if (end - start < lengths[index])
        {
            Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
            end -= start;
            start = 0;
            end += await file.ReadAtLeastAsync(buffer.AsMemory(end), Math.Min(buffer.Length - end, 1), throwOnEndOfStream: false);
            continue;
        }
        work(buffer.AsSpan(start, lengths[index]));
        start += lengths[index++];
    }
}

async Task Stage(string name, Func<Task> work)
{
    var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
    var clock = Stopwatch.StartNew();
    await work();
    var wall = clock.Elapsed.TotalSeconds;
    var cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds;
    Console.WriteLine($"  {name,-34} {cpu / gib,10:F3} {wall / gib,11:F3} {size / 1048576.0 / wall,8:F0}");
}

static FileStream Open(string path) => new(path, FileMode.Open, FileAccess.Read, FileShare.Read, 0, FileOptions.SequentialScan);

static partial class Native
{
    internal static readonly int Direct = System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture is System.Runtime.InteropServices.Architecture.Arm64 ? 0x10000 : 0x4000;

    internal static unsafe int AlignOffset(byte[] array)
    {
        fixed (byte* p = array)
            return (int)((4096 - (nuint)p % 4096) % 4096);
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "syncfs")]
    internal static partial int SyncFs(int fd);
}
