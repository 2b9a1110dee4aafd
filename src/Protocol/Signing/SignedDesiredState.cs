using MessagePack;

namespace MsdFleet.Protocol.Signing;

/// <summary>
/// What travels on an agent's <c>desired</c> topic: the exact MessagePack bytes of a
/// <see cref="Messages.DesiredState"/> and the Coordinator's ECDSA P-256 signature over those bytes. The
/// agent verifies the bytes it received (never a re-encoding), then decodes them. Keys are wire format.
/// </summary>
[MessagePackObject]
public sealed record SignedDesiredState
{
    [Key(0)] public required byte[] Payload { get; init; }
    /// <summary>ECDSA P-256 over SHA-256 of <see cref="Payload"/>, IEEE P1363 format (r‖s, 64 bytes).</summary>
    [Key(1)] public required byte[] Signature { get; init; }
    /// <summary>Hex SHA-256 of the signing key's SubjectPublicKeyInfo, so keys can be rotated.</summary>
    [Key(2)] public required string KeyId { get; init; }
}
