using MsdFleet.Protocol.Messages;

namespace MsdFleet.Protocol.Tests.Messages;

public class DownloadScheduleTests
{
    private static DateTimeOffset Utc(int day, int hour, int minute = 0) => new(2026, 12, day, hour, minute, 0, TimeSpan.Zero); // 2026-12-07 is a Monday

    private static readonly DownloadWindow Nightly = new() { StartSecond = 22 * 3600, EndSecond = 6 * 3600 };

    [Fact]
    public void NoWindows_AlwaysOpen()
    {
        Assert.True(DownloadSchedule.IsOpen(null, Utc(7, 12), out var change));
        Assert.Null(change);
        Assert.True(DownloadSchedule.IsOpen([], Utc(7, 12), out _));
    }

    [Fact]
    public void WindowAcrossMidnight_OpenLateAndEarly_ClosedAtNoon()
    {
        Assert.True(DownloadSchedule.IsOpen([Nightly], Utc(7, 23), out var closes));
        Assert.Equal(Utc(8, 6), closes);
        Assert.True(DownloadSchedule.IsOpen([Nightly], Utc(8, 5, 59), out closes));
        Assert.Equal(Utc(8, 6), closes);
        Assert.False(DownloadSchedule.IsOpen([Nightly], Utc(8, 12), out var opens));
        Assert.Equal(Utc(8, 22), opens);
    }

    [Fact]
    public void Days_CountFromTheDayTheWindowOpens()
    {
        var mondayNight = Nightly with { Days = 1 << (int)DayOfWeek.Monday };
        Assert.True(DownloadSchedule.IsOpen([mondayNight], Utc(8, 3), out _)); // Tuesday 03:00 belongs to Monday's window
        Assert.False(DownloadSchedule.IsOpen([mondayNight], Utc(8, 23), out var opens));
        Assert.Equal(Utc(14, 22), opens); // next Monday
    }

    [Fact]
    public void TimeZone_IsTheAgentsWallClock()
    {
        var amsterdam = new DownloadWindow { StartSecond = 9 * 3600, EndSecond = 10 * 3600, TimeZone = "Europe/Amsterdam" }; // UTC+1 in December
        Assert.True(DownloadSchedule.IsOpen([amsterdam], Utc(7, 8, 30), out var closes));
        Assert.Equal(Utc(7, 9), closes);
        Assert.False(DownloadSchedule.IsOpen([amsterdam], Utc(7, 9, 30), out _));
    }

    [Fact]
    public void OverlappingWindows_CloseAtTheLaterEnd()
    {
        var a = new DownloadWindow { StartSecond = 1 * 3600, EndSecond = 3 * 3600 };
        var b = new DownloadWindow { StartSecond = 2 * 3600, EndSecond = 4 * 3600 };
        Assert.True(DownloadSchedule.IsOpen([a, b], Utc(7, 2, 30), out var closes));
        Assert.Equal(Utc(7, 4), closes);
    }

    [Theory]
    [InlineData(0, 0, 3600, null, "day")]
    [InlineData(127, 3600, 3600, null, "differ")]
    [InlineData(127, -1, 3600, null, "times of day")]
    [InlineData(127, 0, 90000, null, "times of day")]
    [InlineData(128, 0, 3600, null, "day")]
    [InlineData(127, 0, 3600, "Mars/Olympus", "time zone")]
    public void WindowsThatNeverOpen_SayWhy(int days, int start, int end, string? zone, string expected)
    {
        var window = new DownloadWindow { Days = days, StartSecond = start, EndSecond = end, TimeZone = zone };
        Assert.Contains(expected, window.Problem(), StringComparison.Ordinal);
        Assert.False(DownloadSchedule.IsOpen([window], Utc(7, 0, 30), out var change));
        Assert.Null(change);
    }

    [Fact]
    public void WholeDay_IsValid()
    {
        Assert.Null(new DownloadWindow { StartSecond = 0, EndSecond = DownloadWindow.SecondsPerDay }.Problem());
    }

    [Fact]
    public void Loosest_AnyUnrestrictedWantWins()
    {
        var limited = new PullPolicy { MaxBytesPerSecond = 10, Windows = [Nightly] };
        Assert.Null(PullPolicy.Loosest(limited, null));
        var both = PullPolicy.Loosest(limited, new PullPolicy { MaxBytesPerSecond = 20, Windows = [Nightly with { StartSecond = 0, EndSecond = 60 }] });
        Assert.Equal(20, both!.MaxBytesPerSecond);
        Assert.Equal(2, both.Windows!.Count);
        Assert.Null(PullPolicy.Loosest(limited, new PullPolicy { MaxBytesPerSecond = 20 })!.Windows);
    }
}
