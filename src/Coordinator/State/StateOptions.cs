using System.ComponentModel.DataAnnotations;

namespace MsdFleet.Coordinator.State;

/// <summary>
/// Bound from <c>State</c>: where control-plane state lives. SQLite (the embedded default, one file, one
/// Coordinator) or PostgreSQL (production; any number of replicas share it). Bytes — packs and manifests —
/// stay in the object store either way.
/// </summary>
public sealed class StateOptions : IValidatableObject
{
    public const string Section = "State";

    [Required, RegularExpression("^(sqlite|postgres)$", ErrorMessage = "State:Provider must be 'sqlite' or 'postgres'.")]
    public string Provider { get; set; } = "sqlite";

    /// <summary>
    /// An ADO.NET connection string: for SQLite e.g. <c>Data Source=data/state.db</c>; for PostgreSQL e.g.
    /// <c>Host=db;Database=msdfleet;Username=msdfleet;Password=…</c> (from a secret, never a literal in config).
    /// </summary>
    public string ConnectionString { get; set; } = "Data Source=data/state.db";

    public bool IsPostgres => string.Equals(Provider, "postgres", StringComparison.OrdinalIgnoreCase);

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (string.IsNullOrWhiteSpace(ConnectionString))
        {
            yield return new ValidationResult("State:ConnectionString is required.", [nameof(ConnectionString)]);
            yield break;
        }
        string? problem = null;
        try
        {
            if (IsPostgres)
                _ = new Npgsql.NpgsqlConnectionStringBuilder(ConnectionString);
            else if (string.IsNullOrWhiteSpace(new Microsoft.Data.Sqlite.SqliteConnectionStringBuilder(ConnectionString).DataSource))
                problem = "State:ConnectionString for SQLite must name a file, e.g. 'Data Source=data/state.db'.";
        }
        catch (ArgumentException ex)
        {
            problem = $"State:ConnectionString is not a valid {(IsPostgres ? "PostgreSQL" : "SQLite")} connection string: {ex.Message}";
        }
        if (problem is not null)
            yield return new ValidationResult(problem, [nameof(ConnectionString)]);
    }
}
