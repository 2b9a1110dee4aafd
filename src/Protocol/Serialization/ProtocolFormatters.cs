using MessagePack;
using MessagePack.Formatters;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Signing;

namespace MsdFleet.Protocol.Serialization;

/// <summary>
/// Formatters for every wire type, written out instead of emitted at run time, so the agent can be
/// compiled ahead of time (NativeAOT has no Reflection.Emit, and MessagePack 3's source generator is not
/// served to us). They produce exactly what MessagePack's <c>DynamicObjectResolver</c> produces for the
/// <c>[Key(n)]</c> attributes on these types — an array of max key + 1 elements, in key order — and read
/// it the same way: absent trailing keys keep the type's defaults, unknown extra keys are skipped, nil
/// objects and lists are null. <c>ProtocolFormatterTests</c> compares both byte for byte, so the
/// attributes stay the one description of the format.
/// </summary>
public sealed class ProtocolResolver : IFormatterResolver
{
    public static readonly ProtocolResolver Instance = new();

    private static readonly Dictionary<Type, object> Formatters = new()
    {
        [typeof(DesiredState)] = new DesiredStateFormatter(),
        [typeof(DesiredDrive)] = new DesiredDriveFormatter(),
        [typeof(SnapshotRequest)] = new SnapshotRequestFormatter(),
        [typeof(PullPolicy)] = new PullPolicyFormatter(),
        [typeof(DownloadWindow)] = new DownloadWindowFormatter(),
        [typeof(PrefetchImage)] = new PrefetchImageFormatter(),
        [typeof(AgentReport)] = new AgentReportFormatter(),
        [typeof(DriveReport)] = new DriveReportFormatter(),
        [typeof(SnapshotReport)] = new SnapshotReportFormatter(),
        [typeof(WorkingCopyReport)] = new WorkingCopyReportFormatter(),
        [typeof(HostReadReport)] = new HostReadReportFormatter(),
        [typeof(CachedImageReport)] = new CachedImageReportFormatter(),
        [typeof(TransferReport)] = new TransferReportFormatter(),
        [typeof(AgentEvent)] = new AgentEventFormatter(),
        [typeof(ImageManifest)] = new ImageManifestFormatter(),
        [typeof(ManifestChunk)] = new ManifestChunkFormatter(),
        [typeof(ChunkerParameters)] = new ChunkerParametersFormatter(),
        [typeof(ImageLayout)] = new ImageLayoutFormatter(),
        [typeof(ChunkLocation)] = new ChunkLocationFormatter(),
        [typeof(SignedDesiredState)] = new SignedDesiredStateFormatter(),
    };

    private ProtocolResolver() { }

    /// <summary>The wire types this resolver serves (the tests walk them).</summary>
    public static IEnumerable<Type> Types => Formatters.Keys;

    public IMessagePackFormatter<T>? GetFormatter<T>() => Cache<T>.Formatter;

    private static class Cache<T>
    {
        public static readonly IMessagePackFormatter<T>? Formatter = Formatters.TryGetValue(typeof(T), out var f) ? (IMessagePackFormatter<T>)f : null;
    }
}

/// <summary>An object written as an int-keyed array: nil for null, a depth step per nesting level.</summary>
internal abstract class KeyedFormatter<T> : IMessagePackFormatter<T>
{
    public void Serialize(ref MessagePackWriter writer, T value, MessagePackSerializerOptions options)
    {
        if (value is null)
        {
            writer.WriteNil();
            return;
        }
        Write(ref writer, value, options);
    }

    public T Deserialize(ref MessagePackReader reader, MessagePackSerializerOptions options)
    {
        if (reader.TryReadNil())
            return default!;
        options.Security.DepthStep(ref reader);
        try
        {
            return Read(ref reader, reader.ReadArrayHeader(), options);
        }
        finally
        {
            reader.Depth--;
        }
    }

    protected abstract void Write(ref MessagePackWriter writer, T value, MessagePackSerializerOptions options);

    protected abstract T Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options);
}

/// <summary>Reading and writing of the member types the wire types use.</summary>
internal static class Wire
{
    public static void Write(ref MessagePackWriter writer, long? value)
    {
        if (value is { } v)
            writer.Write(v);
        else
            writer.WriteNil();
    }

    public static void Write(ref MessagePackWriter writer, int? value)
    {
        if (value is { } v)
            writer.Write(v);
        else
            writer.WriteNil();
    }

    public static long? ReadNullableInt64(ref MessagePackReader reader) => reader.TryReadNil() ? null : reader.ReadInt64();

    public static int? ReadNullableInt32(ref MessagePackReader reader) => reader.TryReadNil() ? null : reader.ReadInt32();

    public static byte[]? ReadBytes(ref MessagePackReader reader) => reader.TryReadNil() ? null : System.Buffers.BuffersExtensions.ToArray(reader.ReadBytes()!.Value);

    public static void Write<T>(ref MessagePackWriter writer, T? value, MessagePackSerializerOptions options) =>
        Formatter<T>(options).Serialize(ref writer, value!, options);

    public static T Read<T>(ref MessagePackReader reader, MessagePackSerializerOptions options) =>
        Formatter<T>(options).Deserialize(ref reader, options);

    public static void WriteList<T>(ref MessagePackWriter writer, IReadOnlyList<T>? list, MessagePackSerializerOptions options)
    {
        if (list is null)
        {
            writer.WriteNil();
            return;
        }
        var formatter = Formatter<T>(options);
        writer.WriteArrayHeader(list.Count);
        for (var i = 0; i < list.Count; i++)
            formatter.Serialize(ref writer, list[i], options);
    }

    public static List<T>? ReadList<T>(ref MessagePackReader reader, MessagePackSerializerOptions options)
    {
        if (reader.TryReadNil())
            return null;
        var formatter = Formatter<T>(options);
        options.Security.DepthStep(ref reader);
        try
        {
            var count = reader.ReadArrayHeader();
            var list = new List<T>(count);
            for (var i = 0; i < count; i++)
                list.Add(formatter.Deserialize(ref reader, options));
            return list;
        }
        finally
        {
            reader.Depth--;
        }
    }

    public static void WriteMap(ref MessagePackWriter writer, IReadOnlyDictionary<string, string>? map)
    {
        if (map is null)
        {
            writer.WriteNil();
            return;
        }
        writer.WriteMapHeader(map.Count);
        foreach (var (key, value) in map)
        {
            writer.Write(key);
            writer.Write(value);
        }
    }

    /// <summary>A string map with the hash-flooding-resistant comparer of untrusted-data mode.</summary>
    public static Dictionary<string, string>? ReadMap(ref MessagePackReader reader, MessagePackSerializerOptions options)
    {
        if (reader.TryReadNil())
            return null;
        options.Security.DepthStep(ref reader);
        try
        {
            var count = reader.ReadMapHeader();
            var map = new Dictionary<string, string>(count, options.Security.GetEqualityComparer<string>());
            for (var i = 0; i < count; i++)
            {
                var key = reader.ReadString()!;
                map.Add(key, reader.ReadString()!);
            }
            return map;
        }
        finally
        {
            reader.Depth--;
        }
    }

    private static IMessagePackFormatter<T> Formatter<T>(MessagePackSerializerOptions options) =>
        options.Resolver.GetFormatter<T>() ?? throw new MessagePackSerializationException($"No formatter for {typeof(T).Name}.");
}

internal sealed class DesiredStateFormatter : KeyedFormatter<DesiredState>
{
    private static readonly DesiredState Defaults = new() { Generation = 0, Drives = [] };

    protected override void Write(ref MessagePackWriter writer, DesiredState value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(6);
        writer.Write(value.Generation);
        Wire.WriteList(ref writer, value.Drives, options);
        writer.Write(value.IssuedAtUnixMs);
        Wire.Write(ref writer, value.MaxBytesPerSecond);
        writer.Write(value.AgentId);
        Wire.WriteList(ref writer, value.Prefetch, options);
    }

    protected override DesiredState Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        var (generation, drives, issued, maxBytes, agentId, prefetch) = (Defaults.Generation, (IReadOnlyList<DesiredDrive>)null!, Defaults.IssuedAtUnixMs, Defaults.MaxBytesPerSecond, Defaults.AgentId, Defaults.Prefetch);
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: generation = reader.ReadInt64(); break;
                case 1: drives = Wire.ReadList<DesiredDrive>(ref reader, options)!; break;
                case 2: issued = reader.ReadInt64(); break;
                case 3: maxBytes = Wire.ReadNullableInt64(ref reader); break;
                case 4: agentId = reader.ReadString(); break;
                case 5: prefetch = Wire.ReadList<PrefetchImage>(ref reader, options); break;
                default: reader.Skip(); break;
            }
        }
        return new DesiredState { Generation = generation, Drives = drives, IssuedAtUnixMs = issued, MaxBytesPerSecond = maxBytes, AgentId = agentId, Prefetch = prefetch };
    }
}

internal sealed class DesiredDriveFormatter : KeyedFormatter<DesiredDrive>
{
    private static readonly DesiredDrive Defaults = new() { Index = 0 };

    protected override void Write(ref MessagePackWriter writer, DesiredDrive value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(9);
        writer.Write(value.Index);
        writer.Write(value.ImageDigest);
        writer.Write((int)value.Mode);
        writer.Write(value.ReadOnly);
        writer.Write(value.Connected);
        writer.Write(value.ImageName);
        writer.Write(value.DiscardWrites);
        Wire.Write(ref writer, value.Snapshot, options);
        Wire.Write(ref writer, value.Pull, options);
    }

    protected override DesiredDrive Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        var d = Defaults;
        var (index, digest, mode, readOnly, connected, name, discard, snapshot) = (d.Index, d.ImageDigest, d.Mode, d.ReadOnly, d.Connected, d.ImageName, d.DiscardWrites, d.Snapshot);
        var pull = d.Pull;
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: index = reader.ReadInt32(); break;
                case 1: digest = reader.ReadString(); break;
                case 2: mode = (DriveMode)reader.ReadInt32(); break;
                case 3: readOnly = reader.ReadBoolean(); break;
                case 4: connected = reader.ReadBoolean(); break;
                case 5: name = reader.ReadString(); break;
                case 6: discard = reader.ReadBoolean(); break;
                case 7: snapshot = Wire.Read<SnapshotRequest>(ref reader, options); break;
                case 8: pull = Wire.Read<PullPolicy>(ref reader, options); break;
                default: reader.Skip(); break;
            }
        }
        return new DesiredDrive { Index = index, ImageDigest = digest, Mode = mode, ReadOnly = readOnly, Connected = connected, ImageName = name, DiscardWrites = discard, Snapshot = snapshot, Pull = pull };
    }
}

internal sealed class SnapshotRequestFormatter : KeyedFormatter<SnapshotRequest>
{
    protected override void Write(ref MessagePackWriter writer, SnapshotRequest value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(2);
        writer.Write(value.Id);
        writer.Write(value.Name);
    }

    protected override SnapshotRequest Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        string? id = null, name = null;
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: id = reader.ReadString(); break;
                case 1: name = reader.ReadString(); break;
                default: reader.Skip(); break;
            }
        }
        return new SnapshotRequest { Id = id!, Name = name! };
    }
}

internal sealed class PullPolicyFormatter : KeyedFormatter<PullPolicy>
{
    protected override void Write(ref MessagePackWriter writer, PullPolicy value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(2);
        Wire.Write(ref writer, value.MaxBytesPerSecond);
        Wire.WriteList(ref writer, value.Windows, options);
    }

    protected override PullPolicy Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        long? cap = null;
        IReadOnlyList<DownloadWindow>? windows = null;
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: cap = Wire.ReadNullableInt64(ref reader); break;
                case 1: windows = Wire.ReadList<DownloadWindow>(ref reader, options); break;
                default: reader.Skip(); break;
            }
        }
        return new PullPolicy { MaxBytesPerSecond = cap, Windows = windows };
    }
}

internal sealed class DownloadWindowFormatter : KeyedFormatter<DownloadWindow>
{
    private static readonly DownloadWindow Defaults = new();

    protected override void Write(ref MessagePackWriter writer, DownloadWindow value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(4);
        writer.Write(value.Days);
        writer.Write(value.StartSecond);
        writer.Write(value.EndSecond);
        writer.Write(value.TimeZone);
    }

    protected override DownloadWindow Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        var (days, start, end, zone) = (Defaults.Days, Defaults.StartSecond, Defaults.EndSecond, Defaults.TimeZone);
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: days = reader.ReadInt32(); break;
                case 1: start = reader.ReadInt32(); break;
                case 2: end = reader.ReadInt32(); break;
                case 3: zone = reader.ReadString(); break;
                default: reader.Skip(); break;
            }
        }
        return new DownloadWindow { Days = days, StartSecond = start, EndSecond = end, TimeZone = zone };
    }
}

internal sealed class PrefetchImageFormatter : KeyedFormatter<PrefetchImage>
{
    protected override void Write(ref MessagePackWriter writer, PrefetchImage value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(3);
        writer.Write(value.ImageDigest);
        writer.Write(value.ImageName);
        Wire.Write(ref writer, value.Pull, options);
    }

    protected override PrefetchImage Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        string? digest = null, name = null;
        PullPolicy? pull = null;
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: digest = reader.ReadString(); break;
                case 1: name = reader.ReadString(); break;
                case 2: pull = Wire.Read<PullPolicy>(ref reader, options); break;
                default: reader.Skip(); break;
            }
        }
        return new PrefetchImage { ImageDigest = digest!, ImageName = name, Pull = pull };
    }
}

internal sealed class AgentReportFormatter : KeyedFormatter<AgentReport>
{
    private static readonly AgentReport Defaults = new() { AgentVersion = "" };

    protected override void Write(ref MessagePackWriter writer, AgentReport value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(10);
        writer.Write(value.AgentVersion);
        Wire.WriteMap(ref writer, value.Labels);
        Wire.WriteList(ref writer, value.Drives, options);
        Wire.WriteList(ref writer, value.Cache, options);
        writer.Write(value.FreeBytes);
        writer.Write(value.TotalBytes);
        Wire.WriteList(ref writer, value.Transfers, options);
        writer.Write(value.AppliedGeneration);
        writer.Write(value.LastError);
        writer.Write(value.ReportedAtUnixMs);
    }

    protected override AgentReport Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        var d = Defaults;
        string? version = null;
        var (labels, drives, cache, transfers) = (d.Labels, d.Drives, d.Cache, d.Transfers);
        var (free, total, applied, error, reportedAt) = (d.FreeBytes, d.TotalBytes, d.AppliedGeneration, d.LastError, d.ReportedAtUnixMs);
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: version = reader.ReadString(); break;
                case 1: labels = Wire.ReadMap(ref reader, options)!; break;
                case 2: drives = Wire.ReadList<DriveReport>(ref reader, options)!; break;
                case 3: cache = Wire.ReadList<CachedImageReport>(ref reader, options)!; break;
                case 4: free = reader.ReadInt64(); break;
                case 5: total = reader.ReadInt64(); break;
                case 6: transfers = Wire.ReadList<TransferReport>(ref reader, options)!; break;
                case 7: applied = reader.ReadInt64(); break;
                case 8: error = reader.ReadString(); break;
                case 9: reportedAt = reader.ReadInt64(); break;
                default: reader.Skip(); break;
            }
        }
        return new AgentReport
        {
            AgentVersion = version!, Labels = labels, Drives = drives, Cache = cache, FreeBytes = free, TotalBytes = total,
            Transfers = transfers, AppliedGeneration = applied, LastError = error, ReportedAtUnixMs = reportedAt,
        };
    }
}

internal sealed class DriveReportFormatter : KeyedFormatter<DriveReport>
{
    private static readonly DriveReport Defaults = new() { Index = 0 };

    protected override void Write(ref MessagePackWriter writer, DriveReport value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(14);
        writer.Write(value.Index);
        writer.Write(value.ImageDigest);
        writer.Write((int)value.Mode);
        writer.Write(value.ReadOnly);
        writer.Write(value.Connected);
        writer.Write(value.HostState);
        writer.Write(value.Error);
        writer.Write(value.Function);
        writer.Write(value.Lun);
        writer.Write(value.CdromCapable);
        writer.Write(value.WritableCapable);
        Wire.Write(ref writer, value.WorkingCopy, options);
        Wire.Write(ref writer, value.HostRead, options);
        Wire.Write(ref writer, value.Snapshot, options);
    }

    protected override DriveReport Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        var d = Defaults;
        var (index, digest, mode, readOnly, connected, hostState, error) = (d.Index, d.ImageDigest, d.Mode, d.ReadOnly, d.Connected, d.HostState, d.Error);
        var (function, lun, cdrom, writable, copy, hostRead, snapshot) = (d.Function, d.Lun, d.CdromCapable, d.WritableCapable, d.WorkingCopy, d.HostRead, d.Snapshot);
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: index = reader.ReadInt32(); break;
                case 1: digest = reader.ReadString(); break;
                case 2: mode = (DriveMode)reader.ReadInt32(); break;
                case 3: readOnly = reader.ReadBoolean(); break;
                case 4: connected = reader.ReadBoolean(); break;
                case 5: hostState = reader.ReadString(); break;
                case 6: error = reader.ReadString(); break;
                case 7: function = reader.ReadString(); break;
                case 8: lun = reader.ReadInt32(); break;
                case 9: cdrom = reader.ReadBoolean(); break;
                case 10: writable = reader.ReadBoolean(); break;
                case 11: copy = Wire.Read<WorkingCopyReport>(ref reader, options); break;
                case 12: hostRead = Wire.Read<HostReadReport>(ref reader, options); break;
                case 13: snapshot = Wire.Read<SnapshotReport>(ref reader, options); break;
                default: reader.Skip(); break;
            }
        }
        return new DriveReport
        {
            Index = index, ImageDigest = digest, Mode = mode, ReadOnly = readOnly, Connected = connected, HostState = hostState, Error = error,
            Function = function, Lun = lun, CdromCapable = cdrom, WritableCapable = writable, WorkingCopy = copy, HostRead = hostRead, Snapshot = snapshot,
        };
    }
}

internal sealed class SnapshotReportFormatter : KeyedFormatter<SnapshotReport>
{
    private static readonly SnapshotReport Defaults = new() { Id = "" };

    protected override void Write(ref MessagePackWriter writer, SnapshotReport value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(8);
        writer.Write(value.Id);
        writer.Write((int)value.State);
        writer.Write(value.BytesDone);
        writer.Write(value.BytesTotal);
        writer.Write(value.BytesSent);
        writer.Write(value.ImageName);
        writer.Write(value.ImageDigest);
        writer.Write(value.Error);
    }

    protected override SnapshotReport Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        var d = Defaults;
        string? id = null;
        var (state, done, total, sent, name, digest, error) = (d.State, d.BytesDone, d.BytesTotal, d.BytesSent, d.ImageName, d.ImageDigest, d.Error);
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: id = reader.ReadString(); break;
                case 1: state = (SnapshotState)reader.ReadInt32(); break;
                case 2: done = reader.ReadInt64(); break;
                case 3: total = reader.ReadInt64(); break;
                case 4: sent = reader.ReadInt64(); break;
                case 5: name = reader.ReadString(); break;
                case 6: digest = reader.ReadString(); break;
                case 7: error = reader.ReadString(); break;
                default: reader.Skip(); break;
            }
        }
        return new SnapshotReport { Id = id!, State = state, BytesDone = done, BytesTotal = total, BytesSent = sent, ImageName = name, ImageDigest = digest, Error = error };
    }
}

internal sealed class WorkingCopyReportFormatter : KeyedFormatter<WorkingCopyReport>
{
    private static readonly WorkingCopyReport Defaults = new() { BaseDigest = "" };

    protected override void Write(ref MessagePackWriter writer, WorkingCopyReport value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(4);
        writer.Write(value.BaseDigest);
        writer.Write(value.Size);
        writer.Write(value.UnsavedWrites);
        writer.Write(value.Attached);
    }

    protected override WorkingCopyReport Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        string? baseDigest = null;
        var (size, unsaved, attached) = (Defaults.Size, Defaults.UnsavedWrites, Defaults.Attached);
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: baseDigest = reader.ReadString(); break;
                case 1: size = reader.ReadInt64(); break;
                case 2: unsaved = reader.ReadBoolean(); break;
                case 3: attached = reader.ReadBoolean(); break;
                default: reader.Skip(); break;
            }
        }
        return new WorkingCopyReport { BaseDigest = baseDigest!, Size = size, UnsavedWrites = unsaved, Attached = attached };
    }
}

internal sealed class HostReadReportFormatter : KeyedFormatter<HostReadReport>
{
    private static readonly HostReadReport Defaults = new();

    protected override void Write(ref MessagePackWriter writer, HostReadReport value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(4);
        Wire.Write(ref writer, value.BytesRead);
        writer.Write(value.LastReadUnixMs);
        Wire.Write(ref writer, value.BytesWritten);
        writer.Write(value.BytesEstimated);
    }

    protected override HostReadReport Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        var (read, last, written, estimated) = (Defaults.BytesRead, Defaults.LastReadUnixMs, Defaults.BytesWritten, Defaults.BytesEstimated);
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: read = Wire.ReadNullableInt64(ref reader); break;
                case 1: last = reader.ReadInt64(); break;
                case 2: written = Wire.ReadNullableInt64(ref reader); break;
                case 3: estimated = reader.ReadBoolean(); break;
                default: reader.Skip(); break;
            }
        }
        return new HostReadReport { BytesRead = read, LastReadUnixMs = last, BytesWritten = written, BytesEstimated = estimated };
    }
}

internal sealed class CachedImageReportFormatter : KeyedFormatter<CachedImageReport>
{
    protected override void Write(ref MessagePackWriter writer, CachedImageReport value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(2);
        writer.Write(value.ImageDigest);
        writer.Write(value.Size);
    }

    protected override CachedImageReport Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        string? digest = null;
        long size = 0;
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: digest = reader.ReadString(); break;
                case 1: size = reader.ReadInt64(); break;
                default: reader.Skip(); break;
            }
        }
        return new CachedImageReport { ImageDigest = digest!, Size = size };
    }
}

internal sealed class TransferReportFormatter : KeyedFormatter<TransferReport>
{
    private static readonly TransferReport Defaults = new() { ImageDigest = "" };

    protected override void Write(ref MessagePackWriter writer, TransferReport value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(6);
        writer.Write(value.ImageDigest);
        writer.Write(value.BytesDone);
        writer.Write(value.BytesTotal);
        writer.Write((int)value.State);
        writer.Write(value.Error);
        Wire.Write(ref writer, value.ResumesAtUnixMs);
    }

    protected override TransferReport Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        string? digest = null;
        var (done, total, state, error, resumes) = (Defaults.BytesDone, Defaults.BytesTotal, Defaults.State, Defaults.Error, Defaults.ResumesAtUnixMs);
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: digest = reader.ReadString(); break;
                case 1: done = reader.ReadInt64(); break;
                case 2: total = reader.ReadInt64(); break;
                case 3: state = (TransferState)reader.ReadInt32(); break;
                case 4: error = reader.ReadString(); break;
                case 5: resumes = Wire.ReadNullableInt64(ref reader); break;
                default: reader.Skip(); break;
            }
        }
        return new TransferReport { ImageDigest = digest!, BytesDone = done, BytesTotal = total, State = state, Error = error, ResumesAtUnixMs = resumes };
    }
}

internal sealed class AgentEventFormatter : KeyedFormatter<AgentEvent>
{
    private static readonly AgentEvent Defaults = new() { Kind = AgentEventKind.PullProgress };

    protected override void Write(ref MessagePackWriter writer, AgentEvent value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(7);
        writer.Write((int)value.Kind);
        writer.Write(value.ImageDigest);
        writer.Write(value.BytesDone);
        writer.Write(value.BytesTotal);
        writer.Write(value.Message);
        writer.Write(value.AtUnixMs);
        Wire.Write(ref writer, value.Drive);
    }

    protected override AgentEvent Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        var d = Defaults;
        var (kind, digest, done, total, message, at, drive) = (d.Kind, d.ImageDigest, d.BytesDone, d.BytesTotal, d.Message, d.AtUnixMs, d.Drive);
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: kind = (AgentEventKind)reader.ReadInt32(); break;
                case 1: digest = reader.ReadString(); break;
                case 2: done = reader.ReadInt64(); break;
                case 3: total = reader.ReadInt64(); break;
                case 4: message = reader.ReadString(); break;
                case 5: at = reader.ReadInt64(); break;
                case 6: drive = Wire.ReadNullableInt32(ref reader); break;
                default: reader.Skip(); break;
            }
        }
        return new AgentEvent { Kind = kind, ImageDigest = digest, BytesDone = done, BytesTotal = total, Message = message, AtUnixMs = at, Drive = drive };
    }
}

internal sealed class ImageManifestFormatter : KeyedFormatter<ImageManifest>
{
    protected override void Write(ref MessagePackWriter writer, ImageManifest value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(5);
        writer.Write(value.Format);
        writer.Write(value.Size);
        writer.Write(value.Sha256);
        Wire.Write(ref writer, value.Chunker, options);
        Wire.WriteList(ref writer, value.Chunks, options);
    }

    protected override ImageManifest Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        var format = ImageManifest.CurrentFormat;
        long size = 0;
        byte[]? sha256 = null;
        ChunkerParameters? chunker = null;
        IReadOnlyList<ManifestChunk>? chunks = null;
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: format = reader.ReadInt32(); break;
                case 1: size = reader.ReadInt64(); break;
                case 2: sha256 = Wire.ReadBytes(ref reader); break;
                case 3: chunker = Wire.Read<ChunkerParameters>(ref reader, options); break;
                case 4: chunks = Wire.ReadList<ManifestChunk>(ref reader, options); break;
                default: reader.Skip(); break;
            }
        }
        return new ImageManifest { Format = format, Size = size, Sha256 = sha256!, Chunker = chunker!, Chunks = chunks! };
    }
}

internal sealed class ManifestChunkFormatter : KeyedFormatter<ManifestChunk>
{
    protected override void Write(ref MessagePackWriter writer, ManifestChunk value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(2);
        writer.Write(value.Id);
        writer.Write(value.Length);
    }

    protected override ManifestChunk Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        byte[]? id = null;
        var length = 0;
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: id = Wire.ReadBytes(ref reader); break;
                case 1: length = reader.ReadInt32(); break;
                default: reader.Skip(); break;
            }
        }
        return new ManifestChunk { Id = id!, Length = length };
    }
}

internal sealed class ChunkerParametersFormatter : KeyedFormatter<ChunkerParameters>
{
    private static readonly ChunkerParameters Defaults = new();

    protected override void Write(ref MessagePackWriter writer, ChunkerParameters value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(6);
        writer.Write(value.Algorithm);
        writer.Write(value.MinSize);
        writer.Write(value.AverageSize);
        writer.Write(value.MaxSize);
        writer.Write(value.NormalizationLevel);
        writer.Write(value.GearSeed);
    }

    protected override ChunkerParameters Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        var d = Defaults;
        var (algorithm, min, average, max, level, seed) = (d.Algorithm, d.MinSize, d.AverageSize, d.MaxSize, d.NormalizationLevel, d.GearSeed);
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: algorithm = reader.ReadString()!; break;
                case 1: min = reader.ReadInt32(); break;
                case 2: average = reader.ReadInt32(); break;
                case 3: max = reader.ReadInt32(); break;
                case 4: level = reader.ReadInt32(); break;
                case 5: seed = reader.ReadUInt64(); break;
                default: reader.Skip(); break;
            }
        }
        return new ChunkerParameters { Algorithm = algorithm, MinSize = min, AverageSize = average, MaxSize = max, NormalizationLevel = level, GearSeed = seed };
    }
}

internal sealed class ImageLayoutFormatter : KeyedFormatter<ImageLayout>
{
    protected override void Write(ref MessagePackWriter writer, ImageLayout value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(3);
        Wire.WriteList(ref writer, value.Sources, options);
        Wire.WriteList(ref writer, value.Chunks, options);
        writer.Write(value.ExpiresAtUnixMs);
    }

    protected override ImageLayout Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        IReadOnlyList<string>? sources = null;
        IReadOnlyList<ChunkLocation>? chunks = null;
        long expires = 0;
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: sources = Wire.ReadList<string>(ref reader, options); break;
                case 1: chunks = Wire.ReadList<ChunkLocation>(ref reader, options); break;
                case 2: expires = reader.ReadInt64(); break;
                default: reader.Skip(); break;
            }
        }
        return new ImageLayout { Sources = sources!, Chunks = chunks!, ExpiresAtUnixMs = expires };
    }
}

/// <summary>A struct: never nil on the wire.</summary>
internal sealed class ChunkLocationFormatter : IMessagePackFormatter<ChunkLocation>
{
    public void Serialize(ref MessagePackWriter writer, ChunkLocation value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(2);
        writer.Write(value.Source);
        writer.Write(value.Offset);
    }

    public ChunkLocation Deserialize(ref MessagePackReader reader, MessagePackSerializerOptions options)
    {
        options.Security.DepthStep(ref reader);
        try
        {
            var count = reader.ReadArrayHeader();
            var (source, offset) = (0, 0L);
            for (var i = 0; i < count; i++)
            {
                switch (i)
                {
                    case 0: source = reader.ReadInt32(); break;
                    case 1: offset = reader.ReadInt64(); break;
                    default: reader.Skip(); break;
                }
            }
            return new ChunkLocation { Source = source, Offset = offset };
        }
        finally
        {
            reader.Depth--;
        }
    }
}

internal sealed class SignedDesiredStateFormatter : KeyedFormatter<SignedDesiredState>
{
    protected override void Write(ref MessagePackWriter writer, SignedDesiredState value, MessagePackSerializerOptions options)
    {
        writer.WriteArrayHeader(3);
        writer.Write(value.Payload);
        writer.Write(value.Signature);
        writer.Write(value.KeyId);
    }

    protected override SignedDesiredState Read(ref MessagePackReader reader, int count, MessagePackSerializerOptions options)
    {
        byte[]? payload = null, signature = null;
        string? keyId = null;
        for (var i = 0; i < count; i++)
        {
            switch (i)
            {
                case 0: payload = Wire.ReadBytes(ref reader); break;
                case 1: signature = Wire.ReadBytes(ref reader); break;
                case 2: keyId = reader.ReadString(); break;
                default: reader.Skip(); break;
            }
        }
        return new SignedDesiredState { Payload = payload!, Signature = signature!, KeyId = keyId! };
    }
}
