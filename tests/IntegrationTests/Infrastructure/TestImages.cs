using System.Security.Cryptography;

namespace MsdFleet.IntegrationTests.Infrastructure;

/// <summary>Random image files written to disk (never held whole in memory), with their SHA-256.</summary>
public static class TestImages
{
    public static async Task<(string Path, string Sha256)> CreateAsync(string dir, string name, long size, int seed)
    {
        var path = System.IO.Path.Combine(dir, name);
        var random = new Random(seed);
        var buffer = new byte[1 << 20];
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        await using (var file = File.Create(path))
        {
            for (long written = 0; written < size; written += buffer.Length)
            {
                var n = (int)Math.Min(buffer.Length, size - written);
                random.NextBytes(buffer.AsSpan(0, n));
                hash.AppendData(buffer, 0, n);
                await file.WriteAsync(buffer.AsMemory(0, n));
            }
        }
        return (path, Convert.ToHexStringLower(hash.GetHashAndReset()));
    }

    public static string Sha256Of(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}
