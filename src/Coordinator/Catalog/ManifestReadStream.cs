using MsdFleet.Coordinator.Storage;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// A read-only, seekable view of an image reassembled from its chunks in packs. Being seekable lets
/// ASP.NET Core's own range processing (Range, If-Range, 206, 416) serve any byte range without our own
/// parser. Chunks that lie back to back in one pack are read through one open stream.
/// </summary>
public sealed class ManifestReadStream : ReadOnlyStream
{
    private readonly ChunkStore _chunks;
    private readonly ImageManifest _manifest;
    private readonly long[] _offsets;
    private long _position;
    private Stream? _current;
    private string? _currentPack;
    private long _currentPackPosition = -1;

    public ManifestReadStream(ChunkStore chunks, ImageManifest manifest)
    {
        _chunks = chunks;
        _manifest = manifest;
        _offsets = manifest.ComputeOffsets();
    }

    public override bool CanSeek => true;
    public override long Length => _manifest.Size;

    public override long Position
    {
        get => _position;
        set => Seek(value, SeekOrigin.Begin);
    }

    public override long Seek(long offset, SeekOrigin origin)
    {
        var target = origin switch
        {
            SeekOrigin.Begin => offset,
            SeekOrigin.Current => _position + offset,
            SeekOrigin.End => Length + offset,
            _ => throw new ArgumentOutOfRangeException(nameof(origin)),
        };
        ArgumentOutOfRangeException.ThrowIfNegative(target, nameof(offset));
        _position = target;
        return _position;
    }

    public override int Read(byte[] buffer, int offset, int count) =>
        ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_position >= Length || buffer.Length == 0)
            return 0;
        var index = Array.BinarySearch(_offsets, _position);
        if (index < 0)
            index = ~index - 1;
        var inChunk = _position - _offsets[index];
        var chunk = _manifest.Chunks[index];
        var location = await _chunks.LocateAsync(chunk.Id, cancellationToken)
            ?? throw new InvalidDataException($"Chunk {chunk.IdHex} of a committed manifest is missing from the store.");
        var packPosition = location.Offset + inChunk;
        if (_current is null || _currentPack != location.PackId || _currentPackPosition != packPosition)
        {
            if (_current is not null)
                await _current.DisposeAsync();
            _current = await _chunks.Objects.OpenReadAsync(ChunkStore.PackKey(location.PackId), packPosition, cancellationToken);
            if (_current is null)
            {
                // Another replica's GC may have repacked the chunk elsewhere: refresh the index and look again.
                await _chunks.RefreshAsync(cancellationToken);
                location = await _chunks.LocateAsync(chunk.Id, cancellationToken)
                    ?? throw new InvalidDataException($"Chunk {chunk.IdHex} of a committed manifest is missing from the store.");
                packPosition = location.Offset + inChunk;
                _current = await _chunks.Objects.OpenReadAsync(ChunkStore.PackKey(location.PackId), packPosition, cancellationToken)
                    ?? throw new InvalidDataException($"Pack {location.PackId} holding chunk {chunk.IdHex} is missing from the store.");
            }
            _currentPack = location.PackId;
        }
        var want = (int)Math.Min(buffer.Length, chunk.Length - inChunk);
        var read = await _current.ReadAsync(buffer[..want], cancellationToken);
        if (read == 0)
            throw new InvalidDataException($"Pack {location.PackId} is shorter than its index says.");
        _position += read;
        _currentPackPosition = packPosition + read;
        return read;
    }


    protected override void Dispose(bool disposing)
    {
        if (disposing)
            _current?.Dispose();
        base.Dispose(disposing);
    }

    public override async ValueTask DisposeAsync()
    {
        if (_current is not null)
            await _current.DisposeAsync();
        await base.DisposeAsync();
    }
}
