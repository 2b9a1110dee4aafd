using MsdFleet.Coordinator.Tests.State;

namespace MsdFleet.IntegrationTests.Infrastructure;

/// <summary>What replicas share in production: a real PostgreSQL and a real S3 server (Swift), started once for these tests.</summary>
[CollectionDefinition(Name)]
public sealed class ReplicaServers : ICollectionFixture<PostgresServer>, ICollectionFixture<SwiftServer>
{
    public const string Name = "replicas";
}
