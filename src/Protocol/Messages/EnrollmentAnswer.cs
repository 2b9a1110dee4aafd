namespace MsdFleet.Protocol.Messages;

/// <summary>
/// What <c>POST /api/v1/enroll</c> hands an enrolling agent (JSON): its identity and secret, where to reach
/// the Coordinator and the broker, the topic prefix, the desired-state signing key to pin, and the CA to
/// trust (null when the Coordinator's certificate is publicly trusted). The agent writes it, mode 0600.
/// </summary>
public sealed record EnrollmentAnswer(string AgentId, string Secret, string CoordinatorUrl, string BrokerUrl, string TopicPrefix,
    string SigningPublicKey, string SigningKeyId, string? CaCertificate);
