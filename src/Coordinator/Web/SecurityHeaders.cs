namespace MsdFleet.Coordinator.Web;

/// <summary>
/// Headers on every answer: no MIME sniffing, no framing (clickjacking), no referrer leaks, and for the
/// web UI a Content-Security-Policy that allows only this origin's own scripts, styles and connections
/// ('wasm-unsafe-eval' lets the page compile its own WebAssembly chunker, js/gear-wasm.js; it allows no eval).
/// Over HTTPS, HSTS tells browsers never to fall back to plain HTTP.
/// </summary>
public static class SecurityHeaders
{
    private const string UiPolicy = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

    public static IApplicationBuilder UseSecurityHeaders(this IApplicationBuilder app) => app.Use((context, next) =>
    {
        var headers = context.Response.Headers;
        headers.XContentTypeOptions = "nosniff";
        headers.XFrameOptions = "DENY";
        headers["Referrer-Policy"] = "no-referrer";
        // The API reference page (Swagger UI) needs its own inline bootstrap script; everything else gets the strict policy.
        if (!context.Request.Path.StartsWithSegments("/api/docs", StringComparison.Ordinal))
            headers.ContentSecurityPolicy = UiPolicy;
        if (context.Request.IsHttps)
            headers.StrictTransportSecurity = "max-age=31536000";
        return next(context);
    });
}
