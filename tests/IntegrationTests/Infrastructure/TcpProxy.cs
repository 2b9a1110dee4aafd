using System.Net;
using System.Net.Sockets;

namespace MsdFleet.IntegrationTests.Infrastructure;

/// <summary>
/// A loopback TCP forwarder that a test can cut, to make a real server unreachable on demand. It can
/// also count the bytes it delivered to the client: with small socket buffers on its own sides, that is
/// close to what the client really received — unlike a server-side count, which includes whatever sat in
/// kernel buffers when a client was killed.
/// </summary>
public sealed class TcpProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly int _target;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<TcpClient> _open = [];
    private readonly int? _bufferBytes;
    private volatile bool _cut;
    private long _delivered;

    public TcpProxy(int targetPort, int? bufferBytes = null)
    {
        _target = targetPort;
        _bufferBytes = bufferBytes;
        _listener.Start();
        _ = AcceptAsync();
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    /// <summary>Bytes written to clients so far.</summary>
    public long Delivered => Interlocked.Read(ref _delivered);

    /// <summary>Drops every connection and refuses new ones until <see cref="Restore"/>.</summary>
    public void Cut()
    {
        _cut = true;
        lock (_open)
        {
            foreach (var client in _open)
                client.Dispose();
            _open.Clear();
        }
    }

    public void Restore() => _cut = false;

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient inbound;
            try
            {
                inbound = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            if (_cut)
            {
                inbound.Client.LingerState = new LingerOption(true, 0);
                inbound.Dispose();
                continue;
            }
            _ = PipeAsync(inbound);
        }
    }

    private async Task PipeAsync(TcpClient inbound)
    {
        using var outbound = new TcpClient();
        try
        {
            await outbound.ConnectAsync(IPAddress.Loopback, _target);
            lock (_open)
            {
                _open.Add(inbound);
                _open.Add(outbound);
            }
            if (_bufferBytes is { } size)
            {
                inbound.SendBufferSize = size;
                outbound.ReceiveBufferSize = size;
            }
            var a = inbound.GetStream().CopyToAsync(outbound.GetStream(), _stop.Token);
            var b = CopyCountingAsync(outbound.GetStream(), inbound.GetStream());
            await Task.WhenAny(a, b);
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            // a cut connection ends here
        }
        finally
        {
            inbound.Dispose();
        }
    }

    private async Task CopyCountingAsync(NetworkStream from, NetworkStream to)
    {
        var buffer = new byte[_bufferBytes ?? 81920];
        int read;
        while ((read = await from.ReadAsync(buffer, _stop.Token)) > 0)
        {
            await to.WriteAsync(buffer.AsMemory(0, read), _stop.Token);
            Interlocked.Add(ref _delivered, read);
        }
    }

    public ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        Cut();
        _stop.Dispose();
        return ValueTask.CompletedTask;
    }
}
