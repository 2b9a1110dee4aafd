using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Mvc;
using MsdFleet.Coordinator.Storage;

namespace MsdFleet.Coordinator.Web;

/// <summary>
/// Turns exceptions into RFC 9457 ProblemDetails with a stable <c>code</c>. Clients never see a stack
/// trace; unexpected exceptions are logged here and answered with a generic 500.
/// </summary>
public sealed partial class ApiExceptionHandler(IProblemDetailsService problems, ILogger<ApiExceptionHandler> logger) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(httpContext);
        var (status, code, detail) = exception switch
        {
            ApiException api => (api.Status, api.Code, api.Message),
            BadHttpRequestException bad => (bad.StatusCode, "bad-request", bad.Message),
            ObjectStoreUnavailableException => (StatusCodes.Status503ServiceUnavailable, "store-unavailable",
                "The object store is unavailable; try again shortly."),
            _ when State.StateDatabase.IsUnavailable(exception) => (StatusCodes.Status503ServiceUnavailable, "state-unavailable",
                "The state database is unavailable; nothing was changed. Try again shortly."),
            OperationCanceledException when httpContext.RequestAborted.IsCancellationRequested =>
                (499, "client-closed-request", "The client closed the request."),
            _ => (StatusCodes.Status500InternalServerError, "internal-error", "An unexpected error occurred; see the Coordinator log."),
        };
        if (status >= 500 && status != 503)
            Log.UnhandledException(logger, httpContext.Request.Method, httpContext.Request.Path, exception);
        if (httpContext.Response.HasStarted)
            return true;
        httpContext.Response.StatusCode = status;
        if (exception is ApiException { RetryAfter: { } retry })
            httpContext.Response.Headers.RetryAfter = ((int)Math.Ceiling(retry.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
        else if (status == StatusCodes.Status503ServiceUnavailable)
            httpContext.Response.Headers.RetryAfter = "5";
        return await problems.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = httpContext,
            Exception = exception,
            ProblemDetails = Problem(status, code, detail),
        });
    }

    public static ProblemDetails Problem(int status, string code, string detail)
    {
        var problem = new ProblemDetails { Status = status, Title = code, Detail = detail, Type = $"https://msdfleet.dev/errors/{code}" };
        problem.Extensions["code"] = code;
        return problem;
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Error, "Unhandled exception for {Method} {Path}")]
        public static partial void UnhandledException(ILogger logger, string method, PathString path, Exception exception);
    }
}
