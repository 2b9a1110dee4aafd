using MsdFleet.EdgeAgent.Gadget;

namespace MsdFleet.EdgeAgent.Tests.Gadget.Kvmd;

/// <summary>Stands in for the configfs driver that discovers kvmd's extra drives: a list of drives and a log of calls.</summary>
public sealed class FakeExtraDrives(params DriveState[] drives) : IGadgetDriver
{
    public List<DriveState> Drives { get; } = [.. drives];
    public List<string> Calls { get; } = [];
    public string? HostState { get; set; } = "configured";

    public Task<IReadOnlyList<DriveState>> ReadDrivesAsync(CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<DriveState>>([.. Drives]);

    public Task AttachAsync(int drive, string imagePath, bool cdrom, bool readOnly, CancellationToken cancellationToken)
    {
        Calls.Add($"attach {drive} {imagePath} cdrom={cdrom} ro={readOnly}");
        return Task.CompletedTask;
    }

    public Task EjectAsync(int drive, CancellationToken cancellationToken)
    {
        Calls.Add($"eject {drive}");
        return Task.CompletedTask;
    }

    public Task EjectGentlyAsync(int drive, CancellationToken cancellationToken)
    {
        Calls.Add($"eject-gently {drive}");
        return Task.CompletedTask;
    }

    public Task<bool> EnsureGadgetAsync(CancellationToken cancellationToken) => Task.FromResult(false);

    public Task<string?> ReadHostStateAsync(CancellationToken cancellationToken) => Task.FromResult(HostState);
}
