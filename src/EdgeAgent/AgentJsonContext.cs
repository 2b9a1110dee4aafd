using System.Text.Json;
using System.Text.Json.Serialization;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.EdgeAgent;

/// <summary>The JSON the agent reads and sends, with serializers generated at compile time (no reflection in the AOT build).</summary>
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
[JsonSerializable(typeof(EnrollmentAnswer))]
[JsonSerializable(typeof(SigningKeyAnswer))]
[JsonSerializable(typeof(CommitRequest))]
internal sealed partial class AgentJsonContext : JsonSerializerContext;

/// <summary><c>GET /api/v1/signing-key</c>.</summary>
internal sealed record SigningKeyAnswer(string KeyId, string PublicKey);

/// <summary><c>POST /api/v1/uploads/{id}/commit</c>.</summary>
internal sealed record CommitRequest(string Name);
