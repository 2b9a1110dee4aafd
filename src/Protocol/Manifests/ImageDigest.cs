using System.Diagnostics.CodeAnalysis;
using System.Security.Cryptography;

namespace MsdFleet.Protocol.Manifests;

/// <summary>
/// The identity of an image: the SHA-256 of its manifest bytes, written <c>sha256:&lt;64 hex&gt;</c>
/// like a container registry digest. Desired state always names a digest, never just a name.
/// </summary>
public readonly record struct ImageDigest
{
    public const string Prefix = "sha256:";
    private readonly string _hex;

    private ImageDigest(string hex) => _hex = hex;

    /// <summary>64 lowercase hex characters; safe as a file or object name.</summary>
    public string Hex => _hex ?? throw new InvalidOperationException("Default ImageDigest has no value.");

    public static ImageDigest FromHash(ReadOnlySpan<byte> sha256)
    {
        if (sha256.Length != 32)
            throw new ArgumentException("A SHA-256 hash is 32 bytes.", nameof(sha256));
        return new ImageDigest(Convert.ToHexStringLower(sha256));
    }

    public static ImageDigest Compute(ReadOnlySpan<byte> manifestBytes) => FromHash(SHA256.HashData(manifestBytes));

    public static bool TryParse([NotNullWhen(true)] string? value, out ImageDigest digest)
    {
        digest = default;
        if (value is null)
            return false;
        var hex = value.StartsWith(Prefix, StringComparison.Ordinal) ? value[Prefix.Length..] : null;
        if (hex is null || hex.Length != 64)
            return false;
        foreach (var c in hex)
        {
            if (!char.IsAsciiHexDigitLower(c) && !char.IsAsciiDigit(c))
                return false;
        }
        digest = new ImageDigest(hex);
        return true;
    }

    public static ImageDigest Parse(string value) =>
        TryParse(value, out var digest) ? digest : throw new FormatException($"'{value}' is not a digest of the form sha256:<64 lowercase hex>.");

    public override string ToString() => Prefix + Hex;
}
