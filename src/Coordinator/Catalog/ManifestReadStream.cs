using MsdFleet.Coordinator.Storage;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>
/// A read-only, seekable view of an image reassembled from its chunks. Being seekable lets ASP.NET
/// Core's own range processing (Range, If-Range, 206, 416) serve any byte range without our own parser.
/// </summary>
public sealed class ManifestReadStream : Stream
{
    private readonly IObjectStore _store;
    private readonly ImageManifest _manifest;
    private readonly long[] _offsets;
    private readonly Action<long>? _onBytesRead;
    private long _position;
    private Stream? _current;
    private int _currentIndex = -1;
    private long _currentPosition = -1;

    public ManifestReadStream(IObjectStore store, ImageManifest manifest, Action<long>? onBytesRead = null)
    {
        _store = store;
        _manifest = manifest;
        _offsets = manifest.ComputeOffsets();
        _onBytesRead = onBytesRead;
    }

    public override bool CanRead => true;
    public override bool CanSeek => true;
    public override bool CanWrite => false;
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
        if (_current is null || _currentIndex != index || _currentPosition != _position)
        {
            if (_current is not null)
                await _current.DisposeAsync();
            var key = ObjectKeys.Chunk(_manifest.Chunks[index].IdHex);
            _current = await _store.OpenReadAsync(key, inChunk, cancellationToken)
                ?? throw new InvalidDataException($"Chunk {key} of a committed manifest is missing from the store.");
            _currentIndex = index;
        }
        var want = (int)Math.Min(buffer.Length, _manifest.Chunks[index].Length - inChunk);
        var read = await _current.ReadAsync(buffer[..want], cancellationToken);
        if (read == 0)
            throw new InvalidDataException($"Chunk {_manifest.Chunks[index].IdHex} is shorter than its manifest says.");
        _position += read;
        _currentPosition = _position;
        _onBytesRead?.Invoke(read);
        return read;
    }

    public override void Flush() { }
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

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
