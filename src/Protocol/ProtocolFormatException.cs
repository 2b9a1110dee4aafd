namespace MsdFleet.Protocol;

/// <summary>Bytes from the network or disk that do not form a valid protocol object.</summary>
public sealed class ProtocolFormatException : Exception
{
    public ProtocolFormatException() { }
    public ProtocolFormatException(string message) : base(message) { }
    public ProtocolFormatException(string message, Exception innerException) : base(message, innerException) { }
}
