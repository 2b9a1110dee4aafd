using System.Security.Cryptography;
using System.Text;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// Mosquitto 2's password-file hash (<c>$7$</c>: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt), made
/// when a secret is created — the only moment its plain text exists — so the Coordinator can generate
/// the password file of an external broker without ever storing a secret.
/// </summary>
public static class MosquittoPasswordHash
{
    private const int Iterations = 101;

    public static string Create(string password)
    {
        var salt = RandomNumberGenerator.GetBytes(12);
        var hash = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(password), salt, Iterations, HashAlgorithmName.SHA512, 64);
        return $"$7${Iterations}${Convert.ToBase64String(salt)}${Convert.ToBase64String(hash)}";
    }
}
