using System.ComponentModel.DataAnnotations;
using MsdFleet.Protocol.Naming;

namespace MsdFleet.EdgeAgent;

/// <summary>Bound from <c>Agent</c>: who this agent is, where the Coordinator is, where images live.</summary>
public sealed class AgentOptions : IValidatableObject
{
    public const string Section = "Agent";

    [Required(ErrorMessage = "Agent:Id is required (the id the Coordinator registered for this agent).")]
    public string Id { get; set; } = string.Empty;

    [Required(ErrorMessage = "Agent:Secret is required (the agent's own credential from the Coordinator).")]
    public string Secret { get; set; } = string.Empty;

    [Required(ErrorMessage = "Agent:CoordinatorUrl is required, e.g. http://coordinator:8080/.")]
    public Uri? CoordinatorUrl { get; set; }

    /// <summary>
    /// PEM CA bundle that the Coordinator's HTTPS and the broker's MQTT-over-TLS certificates must chain to
    /// (written by <c>enroll</c>); empty trusts the system's roots.
    /// </summary>
    public string? CaCertificatePath { get; set; }

    /// <summary>Local storage root with incoming/, images/ and metadata/.</summary>
    [Required]
    public string StorageRoot { get; set; } = "/var/lib/msdfleet";

    public Dictionary<string, string> Labels { get; set; } = [];

    /// <summary>The Coordinator's desired-state signing key (base64 SubjectPublicKeyInfo); empty pins it at first contact.</summary>
    public string? CoordinatorPublicKey { get; set; }

    /// <summary>Ranged requests in flight during a pull.</summary>
    [Range(1, 64)]
    public int ParallelRequests { get; set; } = 4;

    /// <summary>Cap on pull bandwidth in bytes per second; 0 means unlimited.</summary>
    [Range(0, long.MaxValue)]
    public long MaxBytesPerSecond { get; set; }

    /// <summary>Most bytes the image cache may use; 0 means as much as the disk has.</summary>
    [Range(0, long.MaxValue)]
    public long CacheQuotaBytes { get; set; }

    /// <summary>Check a cached image against its manifest before attaching it: <c>full</c>, <c>sampled</c> or <c>none</c>.</summary>
    [RegularExpression("^(full|sampled|none)$", ErrorMessage = "Agent:VerifyBeforeAttach must be full, sampled or none.")]
    public string VerifyBeforeAttach { get; set; } = "sampled";

    /// <summary>Chunks checked by sampled verification (plus the first and the last).</summary>
    [Range(1, 100_000)]
    public int VerifySampleChunks { get; set; } = 64;

    /// <summary>A range whose next chunk does not arrive within this time is abandoned and retried.</summary>
    public TimeSpan StallTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How often a report is re-published while nothing changes.</summary>
    public TimeSpan ReportInterval { get; set; } = TimeSpan.FromSeconds(30);

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (!NameRules.TryValidateAgentId(Id, out var error))
            yield return new ValidationResult($"Agent:Id is invalid: {error}", [nameof(Id)]);
        if (CoordinatorUrl is { } url && (!url.IsAbsoluteUri || url.Scheme is not ("http" or "https")))
            yield return new ValidationResult($"Agent:CoordinatorUrl must be an absolute http(s) URL, not '{url}'.", [nameof(CoordinatorUrl)]);
        if (!string.IsNullOrEmpty(CaCertificatePath) && !File.Exists(CaCertificatePath))
            yield return new ValidationResult($"Agent:CaCertificatePath '{CaCertificatePath}' does not exist.", [nameof(CaCertificatePath)]);
        if (StallTimeout < TimeSpan.FromSeconds(1))
            yield return new ValidationResult("Agent:StallTimeout must be at least one second.", [nameof(StallTimeout)]);
        if (ReportInterval < TimeSpan.FromSeconds(1))
            yield return new ValidationResult("Agent:ReportInterval must be at least one second.", [nameof(ReportInterval)]);
    }
}
