namespace MsdFleet.EdgeAgent.Gadget.Kvmd;

/// <summary>
/// kvmd refused an MSD operation with one of its 400-class errors (<c>MsdConnectedError</c>,
/// <c>MsdUnknownImageError</c>, <c>ValidatorError</c> …): <see cref="KvmdError"/> is kvmd's exception
/// class name and <see cref="KvmdMessage"/> its <c>error_msg</c>, so callers can tell them apart.
/// Busy, permission and unreachable cases have their own <see cref="GadgetException"/> subclasses instead.
/// </summary>
public sealed class KvmdApiException : GadgetException
{
    public KvmdApiException() { }
    public KvmdApiException(string message) : base(message) { }
    public KvmdApiException(string message, Exception innerException) : base(message, innerException) { }

    public KvmdApiException(string message, string kvmdError, string kvmdMessage) : base(message)
    {
        KvmdError = kvmdError;
        KvmdMessage = kvmdMessage;
    }

    public string KvmdError { get; } = string.Empty;
    public string KvmdMessage { get; } = string.Empty;
}
