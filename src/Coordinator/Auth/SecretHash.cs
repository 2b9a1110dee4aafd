using System.Security.Cryptography;
using System.Text;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// Tokens and agent secrets are 256-bit random values, so a plain SHA-256 is an adequate one-way hash
/// (slow salted hashes are for low-entropy passwords). Comparisons are constant-time.
/// </summary>
public static class SecretHash
{
    public static string NewSecret(string prefix) =>
        prefix + Base64UrlEncode(RandomNumberGenerator.GetBytes(32));

    public static string HashHex(string secret) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(secret)));

    public static bool Matches(string secret, string expectedHashHex)
    {
        var actual = SHA256.HashData(Encoding.UTF8.GetBytes(secret));
        Span<byte> expected = stackalloc byte[32];
        return Convert.FromHexString(expectedHashHex, expected, out _, out var written) == System.Buffers.OperationStatus.Done
            && written == 32 && CryptographicOperations.FixedTimeEquals(actual, expected);
    }

    private static string Base64UrlEncode(byte[] bytes) =>
        Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
