// Each test starts servers and agent processes; on a 2-core machine they are run one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
