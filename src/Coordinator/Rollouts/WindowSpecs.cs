using System.Globalization;
using MsdFleet.Coordinator.Web;
using MsdFleet.Protocol.Messages;

namespace MsdFleet.Coordinator.Rollouts;

/// <summary>Download windows as people write them (<c>{"days": ["mon"], "start": "22:00", "end": "06:00", "timeZone": "Europe/Amsterdam"}</c>) to the wire form agents keep to.</summary>
public static class WindowSpecs
{
    private static readonly string[] DayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

    /// <summary>Validated and normalized windows; <see cref="ApiException"/> (400) naming the first problem.</summary>
    public static IReadOnlyList<WindowSpec>? Normalize(IReadOnlyList<WindowSpec>? windows, DateTimeOffset now, DateTimeOffset deadline)
    {
        if (windows is null || windows.Count == 0)
            return null;
        if (windows.Count > 20)
            throw ApiException.BadRequest("invalid-download-windows", "At most 20 download windows.");
        var normalized = new List<WindowSpec>(windows.Count);
        for (var i = 0; i < windows.Count; i++)
        {
            var w = windows[i] ?? throw ApiException.BadRequest("invalid-download-windows", $"downloadWindows[{i}] is null.");
            var wire = ToWire(w, i);
            if (wire.Problem() is { } problem)
                throw ApiException.BadRequest("window-never-opens", $"downloadWindows[{i}] never opens: {problem}.");
            normalized.Add(new WindowSpec(Days(wire.Days), Time(wire.StartSecond), Time(wire.EndSecond), wire.TimeZone));
        }
        var all = ToWire(normalized);
        var open = DownloadSchedule.IsOpen(all, now, out var opens);
        if (!open && (opens is null || opens > deadline))
            throw ApiException.BadRequest("windows-after-deadline",
                $"No download window opens before the rollout's deadline ({deadline:u}){(opens is { } at ? $"; the first opens {at:u}" : "")}. Move the windows or raise deadlineHours.");
        return normalized;
    }

    public static IReadOnlyList<DownloadWindow>? ToWire(IReadOnlyList<WindowSpec>? windows) =>
        windows is { Count: > 0 } ? windows.Select((w, i) => ToWire(w, i)).ToList() : null;

    /// <summary>The wire form back as people read it (for views of desired state).</summary>
    public static IReadOnlyList<WindowSpec>? FromWire(IReadOnlyList<DownloadWindow>? windows) =>
        windows is { Count: > 0 } ? windows.Select(w => new WindowSpec(Days(w.Days), Time(w.StartSecond), Time(w.EndSecond), w.TimeZone)).ToList() : null;

    private static DownloadWindow ToWire(WindowSpec w, int i)
    {
        var days = 0;
        foreach (var day in w.Days ?? DayNames)
        {
            var at = Array.IndexOf(DayNames, (day ?? "").Trim().ToLowerInvariant() is { Length: >= 3 } d ? d[..3] : "");
            if (at < 0)
                throw ApiException.BadRequest("invalid-download-windows", $"downloadWindows[{i}]: '{day}' is not a day (mon, tue, wed, thu, fri, sat, sun).");
            days |= 1 << at;
        }
        return new DownloadWindow
        {
            Days = days,
            StartSecond = Seconds(w.Start, i, "start"),
            EndSecond = Seconds(w.End, i, "end"),
            TimeZone = string.IsNullOrWhiteSpace(w.TimeZone) || w.TimeZone is "UTC" ? null : w.TimeZone.Trim(),
        };
    }

    private static int Seconds(string? text, int i, string field)
    {
        var formats = new[] { @"hh\:mm", @"hh\:mm\:ss", @"h\:mm" };
        if (text?.Trim() == "24:00")
            return DownloadWindow.SecondsPerDay;
        if (text is null || !TimeSpan.TryParseExact(text.Trim(), formats, CultureInfo.InvariantCulture, out var time) || time >= TimeSpan.FromDays(1))
            throw ApiException.BadRequest("invalid-download-windows", $"downloadWindows[{i}].{field} must be a time of day \"HH:MM\" (00:00 to 24:00), not '{text}'.");
        return (int)time.TotalSeconds;
    }

    /// <summary>The days of a mask by name; null for every day (as a person would leave it out).</summary>
    private static List<string>? Days(int mask) =>
        mask == DownloadWindow.AllDays ? null : Enumerable.Range(0, 7).Where(d => (mask & (1 << d)) != 0).Select(d => DayNames[d]).ToList();

    private static string Time(int seconds) => seconds % 60 == 0
        ? $"{seconds / 3600:00}:{seconds / 60 % 60:00}"
        : $"{seconds / 3600:00}:{seconds / 60 % 60:00}:{seconds % 60:00}";
}
