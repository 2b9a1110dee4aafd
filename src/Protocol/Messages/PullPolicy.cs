using MessagePack;

namespace MsdFleet.Protocol.Messages;

/// <summary>
/// How one image may be pulled: a bandwidth cap of its own (on top of the agent's) and the windows in which
/// its bytes may move. It travels inside the signed desired state, so an agent honours it while the
/// Coordinator is away. Keys are wire format: append only, never renumber.
/// </summary>
[MessagePackObject]
public sealed record PullPolicy
{
    /// <summary>This pull's cap in bytes per second (a rollout's share of its site's budget); null or 0: none beyond the agent's own.</summary>
    [Key(0)] public long? MaxBytesPerSecond { get; init; }
    /// <summary>When not empty, bytes move only while one of these windows is open; a pull running when they close pauses and resumes in the next.</summary>
    [Key(1)] public IReadOnlyList<DownloadWindow>? Windows { get; init; }

    /// <summary>The looser of two policies for the same image (two drives want it): the pull may run when either allows it.</summary>
    public static PullPolicy? Loosest(PullPolicy? a, PullPolicy? b)
    {
        if (a is null || b is null)
            return null;
        long? cap = a.MaxBytesPerSecond is > 0 && b.MaxBytesPerSecond is > 0 ? Math.Max(a.MaxBytesPerSecond.Value, b.MaxBytesPerSecond.Value) : null;
        IReadOnlyList<DownloadWindow>? windows = a.Windows is { Count: > 0 } && b.Windows is { Count: > 0 } ? [.. a.Windows, .. b.Windows] : null;
        return cap is null && windows is null ? null : new PullPolicy { MaxBytesPerSecond = cap, Windows = windows };
    }
}

/// <summary>
/// A recurring window: on the given days, from <see cref="StartSecond"/> to <see cref="EndSecond"/> (seconds after
/// local midnight in <see cref="TimeZone"/>). An end at or before the start crosses midnight (22:00–06:00); the day is the
/// day the window opens. Keys are wire format: append only.
/// </summary>
[MessagePackObject]
public sealed record DownloadWindow
{
    /// <summary>Bit <c>1 &lt;&lt; (int)DayOfWeek</c> per day it opens (Sunday = bit 0); 127 = every day.</summary>
    [Key(0)] public int Days { get; init; } = AllDays;
    [Key(1)] public int StartSecond { get; init; }
    [Key(2)] public int EndSecond { get; init; }
    /// <summary>An IANA time zone id (<c>Europe/Amsterdam</c>); null is UTC.</summary>
    [Key(3)] public string? TimeZone { get; init; }

    public const int AllDays = 0x7F;
    public const int SecondsPerDay = 86_400;

    /// <summary>Why this window can never open, or null when it can.</summary>
    public string? Problem()
    {
        if ((Days & AllDays) == 0 || (Days & ~AllDays) != 0)
            return "a window needs at least one day of the week";
        if (StartSecond is < 0 or >= SecondsPerDay || EndSecond is < 0 or > SecondsPerDay)
            return "a window's start and end are times of day (00:00 to 24:00)";
        if (StartSecond == EndSecond)
            return "a window's end must differ from its start";
        if (TimeZone is not null && !DownloadSchedule.TryZone(TimeZone, out _))
            return $"the time zone '{TimeZone}' is not known";
        return null;
    }
}

/// <summary>Whether a set of windows is open at a moment, and when that changes next (shared by the Coordinator's checks and the agent).</summary>
public static class DownloadSchedule
{
    public static bool TryZone(string? id, out TimeZoneInfo zone)
    {
        zone = TimeZoneInfo.Utc;
        if (id is null || id is "UTC" or "Etc/UTC")
            return true;
        try
        {
            zone = TimeZoneInfo.FindSystemTimeZoneById(id);
            return true;
        }
        catch (Exception ex) when (ex is TimeZoneNotFoundException or InvalidTimeZoneException)
        {
            return false;
        }
    }

    /// <summary>
    /// Null or no windows: always open (<paramref name="change"/> null). Otherwise whether one window is open at
    /// <paramref name="now"/>, and <paramref name="change"/>: when it closes (open) or next opens (closed; null when
    /// none ever will). A window that cannot open (<see cref="DownloadWindow.Problem"/>) is ignored.
    /// </summary>
    public static bool IsOpen(IReadOnlyList<DownloadWindow>? windows, DateTimeOffset now, out DateTimeOffset? change)
    {
        change = null;
        if (windows is not { Count: > 0 })
            return true;
        var open = false;
        DateTimeOffset? closes = null, opens = null;
        foreach (var window in windows)
        {
            if (window.Problem() is not null || !TryZone(window.TimeZone, out var zone))
                continue;
            var today = TimeZoneInfo.ConvertTime(now, zone).Date;
            // The window that opened yesterday may still be open; then today's and the coming week's.
            for (var day = -1; day <= 7; day++)
            {
                var date = today.AddDays(day);
                if ((window.Days & (1 << (int)date.DayOfWeek)) == 0)
                    continue;
                var start = Utc(zone, date.AddSeconds(window.StartSecond));
                var length = window.EndSecond > window.StartSecond ? window.EndSecond - window.StartSecond : window.EndSecond + DownloadWindow.SecondsPerDay - window.StartSecond;
                var end = start.AddSeconds(length);
                if (start <= now && now < end)
                {
                    open = true;
                    if (closes is null || end > closes)
                        closes = end;
                }
                else if (start > now && (opens is null || start < opens))
                {
                    opens = start;
                }
            }
        }
        change = open ? closes : opens;
        return open;
    }

    /// <summary>A local wall-clock time as UTC; a time skipped by a daylight-saving jump moves to just after it.</summary>
    private static DateTimeOffset Utc(TimeZoneInfo zone, DateTime local)
    {
        local = DateTime.SpecifyKind(local, DateTimeKind.Unspecified);
        while (zone.IsInvalidTime(local))
            local = local.AddMinutes(15);
        return new DateTimeOffset(TimeZoneInfo.ConvertTimeToUtc(local, zone), TimeSpan.Zero);
    }
}

/// <summary>An image to stage into the agent's cache without putting it on a drive (a rollout's <c>stageOnly</c>). Keys are wire format.</summary>
[MessagePackObject]
public sealed record PrefetchImage
{
    /// <summary><c>sha256:…</c> digest of the image.</summary>
    [Key(0)] public required string ImageDigest { get; init; }
    /// <summary>Catalog name at the time of the request; for people reading reports.</summary>
    [Key(1)] public string? ImageName { get; init; }
    [Key(2)] public PullPolicy? Pull { get; init; }
}
