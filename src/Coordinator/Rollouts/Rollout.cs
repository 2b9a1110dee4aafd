using System.Text.Json.Serialization;

namespace MsdFleet.Coordinator.Rollouts;

/// <summary>A rollout's states. Active: <c>scheduled</c>, <c>running</c>, <c>paused</c>, <c>cancelling</c>.</summary>
public static class RolloutStates
{
    public const string Scheduled = "scheduled";
    public const string Running = "running";
    public const string Paused = "paused";
    public const string Cancelling = "cancelling";
    public const string Cancelled = "cancelled";
    /// <summary>Every execution succeeded.</summary>
    public const string Succeeded = "succeeded";
    /// <summary>Every execution ended, some failed or were skipped, within the failure threshold.</summary>
    public const string Finished = "finished";
    /// <summary>Stopped by the failure threshold (or its deadline); <c>retry-failed</c> resumes it.</summary>
    public const string Failed = "failed";

    public static readonly string[] Active = [Scheduled, Running, Paused, Cancelling];
}

/// <summary>One agent's part in a rollout.</summary>
public static class ExecutionStates
{
    public const string Queued = "queued";
    /// <summary>Claimed by the leader, its drive being assigned (a leader that died here is picked up by the next).</summary>
    public const string Starting = "starting";
    /// <summary>Assigned; the agent is pulling (or waiting for its download window).</summary>
    public const string Pulling = "pulling";
    /// <summary>The image is in the agent's cache; attaching (a stageOnly rollout's executions succeed here).</summary>
    public const string Staged = "staged";
    public const string Succeeded = "succeeded";
    public const string Failed = "failed";
    public const string TimedOut = "timed-out";
    /// <summary>Its agent stayed offline until the rollout's deadline.</summary>
    public const string Skipped = "skipped";
    public const string Cancelled = "cancelled";
    /// <summary>Cancelled with revert: its drive was put back to what it was before.</summary>
    public const string Reverted = "reverted";

    public static bool IsTerminal(string state) => state is not (Queued or Starting or Pulling or Staged);

    /// <summary>Assigned and still moving bytes (what maxConcurrentPulls and the per-site limit count).</summary>
    public static bool IsPulling(string state) => state is Starting or Pulling;

    public static bool IsFailure(string state) => state is Failed or TimedOut;
}

/// <summary>What a rollout does, as validated and stored (the image resolved to its digest at creation).</summary>
public sealed record RolloutSpec
{
    public required string Image { get; init; }
    public required string Digest { get; init; }
    public int Drive { get; init; }
    public required string Mode { get; init; }
    public bool ReadOnly { get; init; } = true;
    public bool Connect { get; init; } = true;
    public string Selector { get; init; } = "";
    /// <summary>Cumulative wave ends as given: counts ("10") or percentages ("25%") of the matched agents; the last reaches all.</summary>
    public IReadOnlyList<string> Waves { get; init; } = ["100%"];
    /// <summary>Agents assigned and not yet done, at most, across the rollout (null: no limit).</summary>
    public int? MaxConcurrentPulls { get; init; }
    /// <summary>Pull into the agents' caches and hold there, attach nothing; a later rollout with the same image attaches without moving a byte.</summary>
    public bool StageOnly { get; init; }
    /// <summary>Each site's download budget, split evenly among its <see cref="MaxConcurrentPullsPerSite"/> pulls (each agent enforces its share itself).</summary>
    public long? SiteMaxBytesPerSecond { get; init; }
    /// <summary>Agents of one site (label <c>site</c>) pulling at a time, at most (null: no per-site limit; 1 when a site budget is given).</summary>
    public int? MaxConcurrentPullsPerSite { get; init; }
    /// <summary>When bytes may move; travels in the signed desired state, so agents keep to it while the Coordinator is away.</summary>
    public IReadOnlyList<WindowSpec>? DownloadWindows { get; init; }
    public FailureThreshold FailureThreshold { get; init; } = new();
    /// <summary>Seconds from assignment to attached before an execution times out; 0: none (the default with download windows).</summary>
    public int ExecutionTimeoutSeconds { get; init; } = 1800;
    public DateTimeOffset? StartAt { get; init; }
    /// <summary>After this, agents still offline are skipped and the rollout ends.</summary>
    public DateTimeOffset Deadline { get; init; }
}

/// <summary>A download window as given and shown: days (<c>mon</c> … <c>sun</c>; none = every day), start and end as <c>HH:MM</c>, an IANA time zone (default UTC).</summary>
public sealed record WindowSpec(IReadOnlyList<string>? Days, string? Start, string? End, string? TimeZone);

/// <param name="Percent">The rollout stops when more than this share of the executions that ended failed or timed out …</param>
/// <param name="MinExecuted">… once at least this many ended.</param>
public sealed record FailureThreshold(int Percent = 10, int MinExecuted = 1);

/// <summary>The body of <c>POST /api/v1/rollouts</c>.</summary>
public sealed record RolloutRequest
{
    public string? Name { get; init; }
    public string? Image { get; init; }
    public int? Drive { get; init; }
    public string? Mode { get; init; }
    public bool? ReadOnly { get; init; }
    public bool? Connect { get; init; }
    public string? Selector { get; init; }
    public IReadOnlyList<System.Text.Json.JsonElement>? Waves { get; init; }
    public int? MaxConcurrentPulls { get; init; }
    public bool? StageOnly { get; init; }
    public long? SiteMaxBytesPerSecond { get; init; }
    public int? MaxConcurrentPullsPerSite { get; init; }
    public IReadOnlyList<WindowSpec>? DownloadWindows { get; init; }
    public FailureThreshold? FailureThreshold { get; init; }
    public int? ExecutionTimeoutSeconds { get; init; }
    public DateTimeOffset? StartAt { get; init; }
    public int? DeadlineHours { get; init; }

    /// <summary>Anything else the client sent: refused by name, never ignored.</summary>
    [JsonExtensionData]
    public Dictionary<string, System.Text.Json.JsonElement>? Unknown { get; init; }
}

/// <summary>A row of <c>rollouts</c> (properties, not a constructor, so Dapper maps it the same on SQLite and PostgreSQL).</summary>
public sealed class RolloutRow
{
    public string Id { get; init; } = "";
    public string Name { get; init; } = "";
    public string Spec { get; init; } = "";
    public string State { get; init; } = "";
    public string? Reason { get; init; }
    public long Revert { get; init; }
    public string CreatedBy { get; init; } = "";
    public long CreatedAtMs { get; init; }
    public long UpdatedAtMs { get; init; }
}

public sealed class ExecutionRow
{
    public string RolloutId { get; init; } = "";
    public string AgentId { get; init; } = "";
    public long Wave { get; init; }
    public string State { get; init; } = "";
    public string? Error { get; init; }
    public long? Generation { get; init; }
    public string? Previous { get; init; }
    public long? StartedAtMs { get; init; }
    public long UpdatedAtMs { get; init; }
}
