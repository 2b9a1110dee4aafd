namespace MsdFleet.Coordinator.Web;

/// <summary>
/// An error that is part of the API: an HTTP status, a stable machine-readable code (e.g.
/// <c>image-not-found</c>) and one clear sentence. Thrown inside services, rendered as ProblemDetails.
/// </summary>
public sealed class ApiException : Exception
{
    public ApiException(int status, string code, string detail) : base(detail)
    {
        Status = status;
        Code = code;
    }

    public ApiException() : this(500, "internal-error", "An internal error occurred.") { }
    public ApiException(string message) : this(500, "internal-error", message) { }
    public ApiException(string message, Exception innerException) : base(message, innerException)
    {
        Status = 500;
        Code = "internal-error";
    }

    public int Status { get; }
    public string Code { get; }

    /// <summary>Sent as <c>Retry-After</c> (whole seconds) with the problem, for 429 and 503 answers.</summary>
    public TimeSpan? RetryAfter { get; init; }

    public static ApiException BadRequest(string code, string detail) => new(StatusCodes.Status400BadRequest, code, detail);
    public static ApiException NotFound(string code, string detail) => new(StatusCodes.Status404NotFound, code, detail);
    public static ApiException Conflict(string code, string detail) => new(StatusCodes.Status409Conflict, code, detail);
}
