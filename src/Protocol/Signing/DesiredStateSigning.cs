using System.Security.Cryptography;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.Protocol.Signing;

/// <summary>Signing by the Coordinator and verification by agents of desired state (ECDSA P-256).</summary>
public static class DesiredStateSigning
{
    public static string KeyId(ECDsa key)
    {
        ArgumentNullException.ThrowIfNull(key);
        return Convert.ToHexStringLower(SHA256.HashData(key.ExportSubjectPublicKeyInfo()));
    }

    public static byte[] Sign(DesiredState state, ECDsa key)
    {
        ArgumentNullException.ThrowIfNull(key);
        var payload = ProtocolSerializer.Serialize(state);
        return ProtocolSerializer.Serialize(new SignedDesiredState
        {
            Payload = payload,
            Signature = key.SignData(payload, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation),
            KeyId = KeyId(key),
        });
    }

    /// <summary>
    /// Returns the state only if it is signed by <paramref name="trusted"/> and addressed to
    /// <paramref name="agentId"/>; otherwise throws <see cref="DesiredStateRejectedException"/> with the reason.
    /// </summary>
    public static DesiredState Verify(ReadOnlyMemory<byte> message, ECDsa trusted, string agentId)
    {
        ArgumentNullException.ThrowIfNull(trusted);
        SignedDesiredState envelope;
        try
        {
            envelope = ProtocolSerializer.Deserialize<SignedDesiredState>(message);
        }
        catch (ProtocolFormatException ex)
        {
            throw new DesiredStateRejectedException($"not a signed desired state ({ex.Message})", ex);
        }
        if (envelope.Payload is null || envelope.Signature is null || envelope.Signature.Length != 64)
            throw new DesiredStateRejectedException("the signature is missing or malformed");
        if (envelope.KeyId != KeyId(trusted))
            throw new DesiredStateRejectedException($"signed with key {envelope.KeyId}, not the pinned Coordinator key");
        if (!trusted.VerifyData(envelope.Payload, envelope.Signature, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation))
            throw new DesiredStateRejectedException("the signature does not verify (forged or altered)");
        DesiredState state;
        try
        {
            state = ProtocolSerializer.Deserialize<DesiredState>(envelope.Payload);
        }
        catch (ProtocolFormatException ex)
        {
            throw new DesiredStateRejectedException($"the signed payload does not decode ({ex.Message})", ex);
        }
        if (state.AgentId != agentId)
            throw new DesiredStateRejectedException($"addressed to agent '{state.AgentId}', not '{agentId}'");
        return state;
    }
}

public sealed class DesiredStateRejectedException : Exception
{
    public DesiredStateRejectedException() { }
    public DesiredStateRejectedException(string message) : base(message) { }
    public DesiredStateRejectedException(string message, Exception innerException) : base(message, innerException) { }
}
