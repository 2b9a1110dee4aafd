using System.Security.Cryptography;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Serialization;
using MsdFleet.Protocol.Signing;

namespace MsdFleet.Protocol.Tests.Signing;

public sealed class DesiredStateSigningTests : IDisposable
{
    private readonly ECDsa _coordinator = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private readonly ECDsa _attacker = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private static readonly DesiredState State = new()
    {
        Generation = 3,
        AgentId = "rack1",
        Drives = [new DesiredDrive { Index = 0, ImageDigest = "sha256:" + new string('a', 64), Mode = DriveMode.Cdrom, Connected = true }],
    };

    public void Dispose()
    {
        _coordinator.Dispose();
        _attacker.Dispose();
    }

    [Fact]
    public void Verify_SignedByPinnedKeyForThisAgent_ReturnsState()
    {
        var state = DesiredStateSigning.Verify(DesiredStateSigning.Sign(State, _coordinator), _coordinator, "rack1");
        Assert.Equal(State.Drives[0], state.Drives[0]);
        Assert.Equal(3, state.Generation);
    }

    [Fact]
    public void Verify_SignedByAnotherKey_Rejected() =>
        Assert.Contains("not the pinned", Assert.Throws<DesiredStateRejectedException>(
            () => DesiredStateSigning.Verify(DesiredStateSigning.Sign(State, _attacker), _coordinator, "rack1")).Message, StringComparison.Ordinal);

    [Fact]
    public void Verify_ForgedWithPinnedKeyIdButWrongSignature_Rejected()
    {
        var forged = ProtocolSerializer.Deserialize<SignedDesiredState>(DesiredStateSigning.Sign(State, _attacker)) with { KeyId = DesiredStateSigning.KeyId(_coordinator) };
        var ex = Assert.Throws<DesiredStateRejectedException>(() => DesiredStateSigning.Verify(ProtocolSerializer.Serialize(forged), _coordinator, "rack1"));
        Assert.Contains("does not verify", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Verify_PayloadAltered_Rejected()
    {
        var envelope = ProtocolSerializer.Deserialize<SignedDesiredState>(DesiredStateSigning.Sign(State, _coordinator));
        var altered = ProtocolSerializer.Serialize(State with { Generation = 99 });
        Assert.Throws<DesiredStateRejectedException>(() =>
            DesiredStateSigning.Verify(ProtocolSerializer.Serialize(envelope with { Payload = altered }), _coordinator, "rack1"));
    }

    [Fact]
    public void Verify_StateForAnotherAgent_Rejected() =>
        Assert.Contains("addressed to agent 'rack1'", Assert.Throws<DesiredStateRejectedException>(
            () => DesiredStateSigning.Verify(DesiredStateSigning.Sign(State, _coordinator), _coordinator, "rack2")).Message, StringComparison.Ordinal);

    [Fact]
    public void Verify_UnsignedPlainState_Rejected() =>
        Assert.Throws<DesiredStateRejectedException>(() => DesiredStateSigning.Verify(ProtocolSerializer.Serialize(State), _coordinator, "rack1"));
}
