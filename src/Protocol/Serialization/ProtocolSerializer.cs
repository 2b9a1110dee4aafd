using System.Runtime.CompilerServices;
using MessagePack;
using MessagePack.Resolvers;

namespace MsdFleet.Protocol.Serialization;

/// <summary>
/// The one MessagePack configuration both sides use: untrusted-data mode (bounded depth, hash-flooding
/// resistant collections) and a size limit checked before decoding. Decoding failures of any kind become
/// <see cref="ProtocolFormatException"/> so callers handle exactly one exception type.
/// </summary>
public static class ProtocolSerializer
{
    /// <summary>Largest MQTT message payload either side accepts.</summary>
    public const int MaxMessageBytes = 1024 * 1024;

    /// <summary>
    /// The wire types through <see cref="ProtocolResolver"/>'s written-out formatters (the agent runs
    /// ahead-of-time compiled, without Reflection.Emit); anything else — the Coordinator's own stored
    /// records — through MessagePack's standard resolvers, where dynamic code exists.
    /// </summary>
    public static MessagePackSerializerOptions Options { get; } =
        new MessagePackSerializerOptions(RuntimeFeature.IsDynamicCodeSupported
                ? CompositeResolver.Create(ProtocolResolver.Instance, StandardResolver.Instance)
                : CompositeResolver.Create(ProtocolResolver.Instance, BuiltinResolver.Instance))
            .WithSecurity(MessagePackSecurity.UntrustedData);

    public static byte[] Serialize<T>(T value) => MessagePackSerializer.Serialize(value, Options);

    public static T Deserialize<T>(ReadOnlyMemory<byte> bytes, int maxBytes = MaxMessageBytes)
    {
        if (bytes.Length > maxBytes)
            throw new ProtocolFormatException($"Payload of {bytes.Length} bytes exceeds the limit of {maxBytes}.");
        try
        {
            var value = MessagePackSerializer.Deserialize<T>(bytes, Options, out var consumed);
            if (consumed != bytes.Length)
                throw new ProtocolFormatException($"Payload has {bytes.Length - consumed} trailing bytes.");
            return value ?? throw new ProtocolFormatException("Payload decodes to nil.");
        }
        catch (MessagePackSerializationException ex)
        {
            throw new ProtocolFormatException($"Payload is not a valid {typeof(T).Name}: {ex.Message}", ex);
        }
        catch (Exception ex) when (ex is InvalidOperationException or ArgumentException or OverflowException or FormatException or EndOfStreamException)
        {
            throw new ProtocolFormatException($"Payload is not a valid {typeof(T).Name}: {ex.Message}", ex);
        }
    }
}
