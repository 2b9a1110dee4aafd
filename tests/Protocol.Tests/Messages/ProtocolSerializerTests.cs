using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Serialization;

namespace MsdFleet.Protocol.Tests.Messages;

public class ProtocolSerializerTests
{
    [Theory]
    [InlineData("")]
    [InlineData("c1")]                 // reserved/never-used byte
    [InlineData("ffffffff")]           // negative fixints, not an array
    [InlineData("9307")]               // array header promises 3 items, 1 present
    [InlineData("dd7fffffff")]         // array32 claiming 2^31 items
    [InlineData("93a178")]             // generation is a string
    [InlineData("920790c0")]           // trailing bytes
    public void Deserialize_Garbage_ThrowsProtocolFormatException(string hex)
    {
        Assert.Throws<ProtocolFormatException>(() => ProtocolSerializer.Deserialize<DesiredState>(Convert.FromHexString(hex)));
    }

    [Fact]
    public void Deserialize_RandomBytes_OnlyProtocolFormatException()
    {
        var random = new Random(7);
        for (var i = 0; i < 5000; i++)
        {
            var bytes = new byte[random.Next(0, 64)];
            random.NextBytes(bytes);
            try
            {
                ProtocolSerializer.Deserialize<AgentReport>(bytes);
            }
            catch (ProtocolFormatException)
            {
            }
        }
    }

    [Fact]
    public void Deserialize_OverLimit_Refused()
    {
        var ex = Assert.Throws<ProtocolFormatException>(() => ProtocolSerializer.Deserialize<DesiredState>(new byte[ProtocolSerializer.MaxMessageBytes + 1]));
        Assert.Contains("exceeds", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Deserialize_DeeplyNestedArrays_Refused()
    {
        // Untrusted-data mode bounds recursion depth instead of overflowing the stack.
        var bytes = Enumerable.Repeat((byte)0x91, 10_000).Append((byte)0xc0).ToArray();
        Assert.Throws<ProtocolFormatException>(() => ProtocolSerializer.Deserialize<ImageManifest>(bytes));
    }
}
