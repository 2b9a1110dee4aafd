using Microsoft.Extensions.Options;
using MsdFleet.Protocol.IO;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// At first start (no token in the store) creates the bootstrap admin token: the configured one, or a
/// generated one that is printed once to the console (never to the log) and optionally written to a
/// 0600 file for scripts. Runs before Kestrel accepts requests.
/// </summary>
public sealed partial class BootstrapTokenService(
    TokenStore tokens, UserStore users, IOptions<AuthOptions> options, TimeProvider time, ILogger<BootstrapTokenService> logger) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (options.Value.BootstrapAdminPassword is { Length: > 0 } password && !await users.AnyAsync(cancellationToken))
        {
            if (UserStore.ValidatePassword("admin", password) is { } problem)
                throw new InvalidOperationException($"Auth:BootstrapAdminPassword is not acceptable: {problem}");
            // Null when a replica starting at the same moment created it first.
            if (await users.CreateAsync("admin", password, Roles.Admin, cancellationToken) is not null)
                Log.AdminUserCreated(logger);
        }
        if (await tokens.AnyAsync(cancellationToken))
            return;
        var configured = options.Value.BootstrapAdminToken;
        var token = string.IsNullOrWhiteSpace(configured) ? SecretHash.NewSecret("msdf_") : configured;
        await tokens.AddAsync(token, new ApiTokenRecord("bootstrap-admin", Roles.Admin, time.GetUtcNow()) { Id = SecretHash.HashHex(token)[..16] }, cancellationToken);
        if (!string.IsNullOrWhiteSpace(configured))
        {
            Log.ConfiguredTokenStored(logger);
            return;
        }
        if (options.Value.BootstrapTokenFile is { Length: > 0 } file)
        {
            // Created 0600 from the first byte: the token is never readable by others, not even for a moment.
            await AtomicFile.WriteAsync(file, System.Text.Encoding.UTF8.GetBytes(token + "\n"), UnixFileMode.UserRead | UnixFileMode.UserWrite, cancellationToken);
        }
        await Console.Out.WriteLineAsync($"""

            ==== MsdFleet bootstrap admin token (shown once, stored only as a hash) ====
            {token}
            ============================================================================

            """);
        Log.GeneratedTokenShown(logger);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Stored the configured bootstrap admin token (hash only)")]
        public static partial void ConfiguredTokenStored(ILogger logger);

        [LoggerMessage(2, LogLevel.Warning, "Generated a bootstrap admin token and printed it once on the console; keep it safe")]
        public static partial void GeneratedTokenShown(ILogger logger);

        [LoggerMessage(3, LogLevel.Information, "Created the user 'admin' from Auth:BootstrapAdminPassword")]
        public static partial void AdminUserCreated(ILogger logger);
    }
}
