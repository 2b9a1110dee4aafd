namespace MsdFleet.IntegrationTests.Infrastructure;

/// <summary>Polls a condition until a deadline; tests wait on state, never on fixed sleeps.</summary>
public static class Eventually
{
    public static async Task<T> WaitAsync<T>(Func<Task<T?>> probe, TimeSpan timeout, string what, Func<string>? diagnostics = null) where T : class
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var value = await probe();
            if (value is not null)
                return value;
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"Timed out after {timeout.TotalSeconds:0}s waiting for {what}.{(diagnostics is null ? "" : "\n" + diagnostics())}");
            await Task.Delay(100);
        }
    }

    public static async Task WaitAsync(Func<Task<bool>> condition, TimeSpan timeout, string what, Func<string>? diagnostics = null) =>
        await WaitAsync<object>(async () => await condition() ? new object() : null, timeout, what, diagnostics);

    public static Task WaitAsync(Func<bool> condition, TimeSpan timeout, string what, Func<string>? diagnostics = null) =>
        WaitAsync(() => Task.FromResult(condition()), timeout, what, diagnostics);
}
