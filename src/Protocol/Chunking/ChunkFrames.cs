using System.Buffers.Binary;

namespace MsdFleet.Protocol.Chunking;

/// <summary>
/// The body of <c>POST /api/v1/uploads/{id}/chunks</c>: chunks one after another, each as a 4-byte
/// big-endian length and then its bytes. The Coordinator hashes each frame and keeps it only if that id
/// is in the upload's manifest.
/// </summary>
public static class ChunkFrames
{
    public const int HeaderBytes = 4;

    public static void WriteHeader(Span<byte> destination, int length) => BinaryPrimitives.WriteInt32BigEndian(destination, length);

    public static int ReadHeader(ReadOnlySpan<byte> source) => BinaryPrimitives.ReadInt32BigEndian(source);
}
