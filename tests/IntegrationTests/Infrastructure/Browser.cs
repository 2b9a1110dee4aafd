using Microsoft.Playwright;

namespace MsdFleet.IntegrationTests.Infrastructure;

/// <summary>
/// Debian's Chromium (/usr/bin/chromium, installed by scripts/test.sh) driven by Playwright. A failing
/// step saves a screenshot under TestResults/screenshots/ before the failure propagates.
/// </summary>
public sealed class Browser : IAsyncDisposable
{
    public const string ChromiumPath = "/usr/bin/chromium";
    private readonly IPlaywright _playwright;
    private readonly IBrowser _browser;

    private Browser(IPlaywright playwright, IBrowser browser, IBrowserContext context, IPage page)
    {
        _playwright = playwright;
        _browser = browser;
        Context = context;
        Page = page;
    }

    public IBrowserContext Context { get; }
    public IPage Page { get; }

    public static async Task<Browser> StartAsync()
    {
        Assert.True(File.Exists(ChromiumPath), $"{ChromiumPath} is missing: scripts/test.sh installs Debian's chromium package");
        var playwright = await Playwright.CreateAsync();
        var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = ChromiumPath,
            Headless = true,
            Args = ["--no-sandbox", "--disable-dev-shm-usage"],
        });
        var context = await browser.NewContextAsync(new BrowserNewContextOptions { ViewportSize = new ViewportSize { Width = 1400, Height = 1000 } });
        var page = await context.NewPageAsync();
        page.SetDefaultTimeout(60_000);
        return new Browser(playwright, browser, context, page);
    }

    /// <summary>Runs the steps; on any failure saves a full-page screenshot named after the test, then rethrows.</summary>
    public async Task RunAsync(string testName, Func<IPage, Task> steps)
    {
        ArgumentNullException.ThrowIfNull(steps);
        try
        {
            await steps(Page);
        }
        catch
        {
            var folder = Path.Combine(TestPaths.RepoRoot, "TestResults", "screenshots");
            Directory.CreateDirectory(folder);
            var file = Path.Combine(folder, $"{testName}-{DateTime.UtcNow:HHmmss}.png");
            try
            {
                await Page.ScreenshotAsync(new PageScreenshotOptions { Path = file, FullPage = true });
                Console.Error.WriteLine($"browser test failed; screenshot: {file}");
            }
            catch (PlaywrightException)
            {
            }
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Context.DisposeAsync();
        await _browser.DisposeAsync();
        _playwright.Dispose();
    }
}
