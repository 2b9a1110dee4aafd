using System.Security.Cryptography;
using System.Text;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.Coordinator.Storage;

/// <summary>
/// The store layout from DESIGN.md, built in one place. Every key is made of safe characters only
/// ([a-z0-9/._-]), whatever the user typed: catalog names are stored by their SHA-256.
/// </summary>
public static class ObjectKeys
{
    public const string ChunksPrefix = "chunks/";
    public const string ManifestsPrefix = "manifests/sha256/";

    /// <summary>Packs: <c>packs/{id}</c> (chunk data) and <c>packs/{id}.idx</c> (its index); the id is the index's SHA-256.</summary>
    public const string PacksPrefix = "packs/";

    /// <summary>Names the state database this store belongs to (<c>State.StoreBinding</c>).</summary>
    public const string StateBinding = "meta/state-binding";

    /// <summary>The ECDSA key desired states are signed with (<c>Auth.SigningKeyStore</c>).</summary>
    public const string DesiredSigningKey = "auth/desired-signing-key";

    /// <summary>The HMAC key presigned download URLs are signed with (<c>UrlSigner</c>).</summary>
    public const string UrlSigningKey = "auth/url-signing-key";

    /// <summary>ASP.NET Core data-protection keys (cookies, antiforgery), one object per key.</summary>
    public const string DataProtectionPrefix = "auth/dataprotection/";

    /// <summary>Probed by <c>/readyz</c>: a lookup of a key that never exists, so it costs one round trip and writes nothing.</summary>
    public const string ReadinessProbe = "health/readyz";

    public static string Pack(string packId) => PacksPrefix + packId;

    public static string PackIndex(string packId) => PacksPrefix + packId + ".idx";

    /// <summary><c>chunks/ab/abcdef…</c>: fanned out by the first byte so no directory grows huge.</summary>
    public static string Chunk(string idHex) => $"{ChunksPrefix}{idHex[..2]}/{idHex}";

    public static string Manifest(ImageDigest digest) => ManifestsPrefix + digest.Hex;

    /// <summary>
    /// Where versions before the state database kept control-plane state. Read once, by the import at
    /// first start (StateStartupService); nothing writes these any more.
    /// </summary>
    public static class Legacy
    {
        public const string CatalogPrefix = "catalog/";
        public const string DesiredPrefix = "fleet/desired/";
        public const string AgentCredentialsPrefix = "auth/agents/";
        public const string TokensPrefix = "auth/tokens/";
        public const string UsersPrefix = "auth/users/";
        public const string SessionsPrefix = "auth/sessions/";
        public const string EnrollmentsPrefix = "auth/enrollments/";
        public const string AuditPrefix = "audit/";
        public const string HomeAssistantCredentials = "auth/integrations/homeassistant";

        public static string Catalog(string imageName) =>
            CatalogPrefix + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(imageName)));

        public static string Desired(string agentId) => DesiredPrefix + agentId;

        public static string AgentCredentials(string agentId) => AgentCredentialsPrefix + agentId;

        public static string Token(string tokenHashHex) => TokensPrefix + tokenHashHex;

        public static string User(string name) => UsersPrefix + name;

        public static string Session(string key) => SessionsPrefix + key;
    }
}
