using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace MsdFleet.EdgeAgent.Tests.Gadget.Kvmd;

/// <summary>Keeps every formatted log line, at every level, so a test can read what an operator would.</summary>
public sealed class ListLogger<T> : ILogger<T>
{
    public ConcurrentQueue<string> Lines { get; } = new();

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Lines.Enqueue($"{logLevel}: {formatter(state, exception)}{(exception is null ? string.Empty : " " + exception)}");
}
