using System.Security.Cryptography;
using MsdFleet.Coordinator.Catalog;
using MsdFleet.Coordinator.Storage;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Coordinator.Tests.Catalog;

public sealed class ImageIngestorTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "msdfleet-ingest-" + Guid.NewGuid().ToString("N"));
    private readonly FileSystemObjectStore _store;
    private readonly ChunkStore _chunks;
    private readonly ImageIngestor _ingestor;

    public ImageIngestorTests()
    {
        _store = new FileSystemObjectStore(_root);
        _chunks = new ChunkStore(_store);
        _ingestor = new ImageIngestor(_chunks, new ContentChunker(ChunkerParameters.Default), new MediaDetector());
    }

    public void Dispose()
    {
        _store.Dispose();
        Directory.Delete(_root, true);
    }

    private static byte[] Random(int size, int seed)
    {
        var bytes = new byte[size];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    [Fact]
    public async Task Ingest_ManifestDescribesImage_AndReassemblesBitIdentical()
    {
        var data = Random(3 * 1024 * 1024 + 17, 1);
        var result = await _ingestor.IngestAsync(new MemoryStream(data), null, CancellationToken.None);
        Assert.Equal(data.Length, result.Manifest.Size);
        Assert.Equal(SHA256.HashData(data), result.Manifest.Sha256);
        Assert.Equal(data.Length, result.NewBytes);

        var stored = await _store.GetBytesAsync(ObjectKeys.Manifest(result.Digest), ImageManifest.MaxEncodedBytes, CancellationToken.None);
        Assert.Equal(result.Digest, ImageDigest.Compute(stored!));

        await using var stream = new ManifestReadStream(_chunks, result.Manifest);
        var copy = new MemoryStream();
        await stream.CopyToAsync(copy);
        Assert.Equal(data, copy.ToArray());
    }

    [Fact]
    public async Task Ingest_SameImageTwice_SecondStoresNothingNew()
    {
        var data = Random(1024 * 1024, 2);
        var first = await _ingestor.IngestAsync(new MemoryStream(data), null, CancellationToken.None);
        var second = await _ingestor.IngestAsync(new MemoryStream(data), null, CancellationToken.None);
        Assert.Equal(first.Digest, second.Digest);
        Assert.Equal(0, second.NewBytes);
    }

    [Fact]
    public async Task Ingest_PackWithoutIndex_NotTrusted_ChunksStoredAgain()
    {
        var data = Random(200_000, 3);
        var first = await _ingestor.IngestAsync(new MemoryStream(data), null, CancellationToken.None);
        // A crash between the pack's two puts leaves data without .idx: after restart it must not count.
        var index = Directory.GetFiles(Path.Combine(_root, "packs"), "*.idx").Single();
        File.Delete(index);
        var restarted = new ChunkStore(_store);
        await restarted.LoadAsync(CancellationToken.None);
        Assert.False(restarted.Contains(first.Manifest.Chunks[0].Id));
        var ingestor = new ImageIngestor(restarted, new ContentChunker(ChunkerParameters.Default), new MediaDetector());
        var second = await ingestor.IngestAsync(new MemoryStream(data), null, CancellationToken.None);
        Assert.Equal(data.Length, second.NewBytes);
        Assert.True(restarted.Contains(first.Manifest.Chunks[0].Id));
    }

    [Fact]
    public async Task Ingest_ChunksLandInImageOrderInPacks()
    {
        var data = Random(3 * 1024 * 1024, 8);
        var result = await _ingestor.IngestAsync(new MemoryStream(data), null, CancellationToken.None);
        long expected = 0;
        foreach (var chunk in result.Manifest.Chunks)
        {
            Assert.True(_chunks.TryLocate(chunk.Id, out var location));
            Assert.Equal(expected, location.Offset);
            expected += chunk.Length;
        }
    }

    [Fact]
    public async Task Ingest_WrongExpectedSha_ThrowsAndWritesNoManifest()
    {
        var ex = await Assert.ThrowsAsync<ApiException>(() => _ingestor.IngestAsync(new MemoryStream(Random(1000, 4)), new string('0', 64), CancellationToken.None));
        Assert.Equal("sha256-mismatch", ex.Code);
        var manifests = new List<string>();
        await foreach (var key in _store.ListAsync(ObjectKeys.ManifestsPrefix, CancellationToken.None))
            manifests.Add(key);
        Assert.Empty(manifests);
    }

    [Fact]
    public async Task Ingest_SourceFailsMidway_NoManifest()
    {
        var ex = await Assert.ThrowsAsync<IOException>(() => _ingestor.IngestAsync(new FailingStream(Random(2 * 1024 * 1024, 5), 1024 * 1024), null, CancellationToken.None));
        Assert.Contains("connection reset", ex.Message, StringComparison.Ordinal);
        await foreach (var _ in _store.ListAsync(ObjectKeys.ManifestsPrefix, CancellationToken.None))
            Assert.Fail("a manifest was written for a broken upload");
    }

    [Fact]
    public async Task ManifestReadStream_SeekAnywhere_ReadsRightBytes()
    {
        var data = Random(1024 * 1024, 6);
        var result = await _ingestor.IngestAsync(new MemoryStream(data), null, CancellationToken.None);
        await using var stream = new ManifestReadStream(_chunks, result.Manifest);
        var random = new Random(7);
        for (var i = 0; i < 50; i++)
        {
            var offset = random.Next(data.Length);
            var length = Math.Min(random.Next(1, 300_000), data.Length - offset);
            stream.Position = offset;
            var buffer = new byte[length];
            await stream.ReadExactlyAsync(buffer);
            Assert.Equal(data.AsSpan(offset, length).ToArray(), buffer);
        }
    }

    private sealed class FailingStream(byte[] data, int failAt) : MemoryStream(data)
    {
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (Position >= failAt)
                throw new IOException("connection reset by peer");
            return await base.ReadAsync(buffer[..Math.Min(buffer.Length, failAt - (int)Position)], cancellationToken);
        }
    }
}
