using System.ComponentModel.DataAnnotations;

namespace MsdFleet.Coordinator.Storage;

/// <summary>Bound from <c>Storage</c>: the filesystem store (default) or an S3-compatible one.</summary>
public sealed class ObjectStoreOptions : IValidatableObject
{
    public const string Section = "Storage";

    [Required, RegularExpression("^(filesystem|s3)$", ErrorMessage = "Storage:Backend must be 'filesystem' or 's3'.")]
    public string Backend { get; set; } = "filesystem";

    /// <summary>Root folder of the filesystem backend.</summary>
    public string Path { get; set; } = "data/store";

    public S3StoreOptions S3 { get; set; } = new();

    public bool IsS3 => string.Equals(Backend, "s3", StringComparison.OrdinalIgnoreCase);

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (!IsS3)
        {
            if (string.IsNullOrWhiteSpace(Path))
                yield return new ValidationResult("Storage:Path must name a folder for the filesystem store.", [nameof(Path)]);
            yield break;
        }
        if (S3.Endpoint is not { IsAbsoluteUri: true } endpoint || endpoint.Scheme is not ("http" or "https"))
            yield return new ValidationResult("Storage:S3:Endpoint must be an absolute http(s) URL, e.g. https://s3.example.com.", ["S3.Endpoint"]);
        if (string.IsNullOrWhiteSpace(S3.Bucket) || S3.Bucket.Length is < 3 or > 63 || S3.Bucket.Any(c => !(char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '-' or '.')))
            yield return new ValidationResult("Storage:S3:Bucket must be a valid S3 bucket name (3-63 lowercase letters, digits, '-' or '.').", ["S3.Bucket"]);
        if (string.IsNullOrEmpty(S3.AccessKey))
            yield return new ValidationResult("Storage:S3:AccessKey is required for the s3 backend.", ["S3.AccessKey"]);
        if (string.IsNullOrEmpty(S3.SecretKey))
            yield return new ValidationResult("Storage:S3:SecretKey is required for the s3 backend.", ["S3.SecretKey"]);
        if (S3.PublicEndpoint is { } publicEndpoint && (!publicEndpoint.IsAbsoluteUri || publicEndpoint.Scheme is not ("http" or "https") || publicEndpoint.AbsolutePath != "/"))
            yield return new ValidationResult("Storage:S3:PublicEndpoint must be an absolute http(s) URL with no path, e.g. https://s3.example.com, or unset.", ["S3.PublicEndpoint"]);
        if (S3.Prefix.StartsWith('/') || S3.Prefix.Contains("..", StringComparison.Ordinal))
            yield return new ValidationResult("Storage:S3:Prefix may not start with '/' or contain '..'.", ["S3.Prefix"]);
        if (S3.PresignedUrlLifetime < TimeSpan.FromMinutes(1) || S3.PresignedUrlLifetime > TimeSpan.FromDays(7))
            yield return new ValidationResult("Storage:S3:PresignedUrlLifetime must be between 1 minute and 7 days.", ["S3.PresignedUrlLifetime"]);
    }
}

public sealed class S3StoreOptions
{
    public Uri? Endpoint { get; set; }

    /// <summary>
    /// Where agents reach the same S3 server, when that differs from <see cref="Endpoint"/> (a Coordinator in a
    /// cluster talks to <c>http://minio:9000</c>, Pis outside it to <c>https://s3.example.com</c>). The presigned
    /// URLs handed to agents are signed for this host; unset, for <see cref="Endpoint"/>.
    /// </summary>
    public Uri? PublicEndpoint { get; set; }

    public string Bucket { get; set; } = "msdfleet";
    /// <summary>Key prefix inside the bucket, e.g. <c>prod/</c>; empty for the bucket root.</summary>
    public string Prefix { get; set; } = string.Empty;
    public string AccessKey { get; set; } = string.Empty;
    public string SecretKey { get; set; } = string.Empty;
    public string Region { get; set; } = "us-east-1";
    /// <summary>How long the URLs handed to agents stay valid.</summary>
    public TimeSpan PresignedUrlLifetime { get; set; } = TimeSpan.FromHours(1);
    /// <summary>Create the bucket at start when it does not exist.</summary>
    public bool CreateBucket { get; set; } = true;
}
