namespace MsdFleet.Coordinator.Web;

/// <summary>Errors as RFC 9457 problem details.</summary>
public static class WebErrorsSetup
{
    public static WebApplicationBuilder AddWebErrors(this WebApplicationBuilder builder)
    {
        builder.Services.AddProblemDetails();
        builder.Services.AddExceptionHandler<ApiExceptionHandler>();
        builder.Services.ConfigureHttpJsonOptions(o => o.SerializerOptions.Converters.Add(new System.Text.Json.Serialization.JsonStringEnumConverter()));
        return builder;
    }
}
