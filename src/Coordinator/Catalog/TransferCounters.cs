using System.Diagnostics.Metrics;

namespace MsdFleet.Coordinator.Catalog;

/// <summary>Bytes of image content served to agents and downloaders, as a metric and a readable total.</summary>
public sealed class TransferCounters : IDisposable
{
    private readonly Meter _meter = new("MsdFleet.Coordinator");
    private readonly Counter<long> _served;
    private long _contentBytesServed;

    public TransferCounters() => _served = _meter.CreateCounter<long>("msdfleet.content.bytes_served", "By");

    public long ContentBytesServed => Interlocked.Read(ref _contentBytesServed);

    public void AddServed(long bytes)
    {
        Interlocked.Add(ref _contentBytesServed, bytes);
        _served.Add(bytes);
    }

    public void Dispose() => _meter.Dispose();
}
