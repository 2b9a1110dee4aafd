using System.Text;
using Dapper;
using MsdFleet.Coordinator.Storage;

namespace MsdFleet.Coordinator.State;

/// <summary>
/// Binds one state database to one object store, checked at every start. The database names what it
/// holds (its catalog, the roots GC keeps); a second database on the same bucket would see the first's
/// packs as garbage and its GC would delete them, and a database pointed at the wrong (or a wiped) bucket
/// would serve images whose bytes are not there. So the store holds a marker naming its database
/// (<see cref="ObjectKeys.StateBinding"/>) and the database remembers that it wrote one; a start that finds
/// them disagreeing refuses, before anything is imported, collected or written.
/// <para>
/// Two Coordinators on two fresh databases starting on one empty store at the same instant can both find no
/// marker; each writes its own, reads it back, and the one whose marker did not survive refuses.
/// </para>
/// </summary>
public static class StoreBinding
{
    private const string DatabaseIdKey = "database-id";
    private const string BoundKey = "store-bound";

    public static async Task CheckAsync(StateDatabase db, IObjectStore store, string storeDescription, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(db);
        ArgumentNullException.ThrowIfNull(store);
        var (databaseId, bound) = await db.WriteAsync(async (c, t) =>
        {
            await c.ExecuteAsync(new CommandDefinition("INSERT INTO state_meta (key, value) VALUES (@key, @value) ON CONFLICT (key) DO NOTHING",
                new { key = DatabaseIdKey, value = Guid.NewGuid().ToString("N") }, t, cancellationToken: cancellationToken));
            var id = await c.ExecuteScalarAsync<string>(new CommandDefinition("SELECT value FROM state_meta WHERE key = @key", new { key = DatabaseIdKey }, t,
                cancellationToken: cancellationToken));
            var isBound = await c.ExecuteScalarAsync<string?>(new CommandDefinition("SELECT value FROM state_meta WHERE key = @key", new { key = BoundKey }, t,
                cancellationToken: cancellationToken));
            return (id!, isBound is not null);
        }, cancellationToken);

        var marker = await ReadMarkerAsync(store, cancellationToken);
        if (marker is null)
        {
            if (bound)
            {
                throw new InvalidOperationException(
                    $"The object store ({storeDescription}) is not the one this state database ({databaseId}) was used with: the database's store carried a " +
                    $"binding marker ({ObjectKeys.StateBinding}) and this one has none. Point Storage at the right bucket or path; if the store really was " +
                    "emptied, its images are gone — restore it from a backup, or start over with a new state database.");
            }
            await store.PutAsync(ObjectKeys.StateBinding, Encoding.UTF8.GetBytes(Render(databaseId)), cancellationToken);
            await store.FlushAsync(cancellationToken);
            marker = await ReadMarkerAsync(store, cancellationToken);
        }
        if (marker != databaseId)
        {
            throw new InvalidOperationException(
                $"The object store ({storeDescription}) belongs to another state database ({marker}), not to this one ({databaseId}). Two databases on one " +
                "store would each see the other's images as garbage and delete them. Point State:ConnectionString at the database this store was used with, " +
                "or give this database its own bucket or path.");
        }
        if (!bound)
        {
            await db.WriteAsync((c, t) => c.ExecuteAsync(new CommandDefinition("INSERT INTO state_meta (key, value) VALUES (@key, @value) ON CONFLICT (key) DO NOTHING",
                new { key = BoundKey, value = DateTimeOffset.UtcNow.ToString("O") }, t, cancellationToken: cancellationToken)), cancellationToken);
        }
    }

    private static string Render(string databaseId) => $"msdfleet-state-binding v1\ndatabase={databaseId}\n";

    private static async Task<string?> ReadMarkerAsync(IObjectStore store, CancellationToken cancellationToken)
    {
        var bytes = await store.GetBytesAsync(ObjectKeys.StateBinding, 4096, cancellationToken);
        if (bytes is null)
            return null;
        var text = Encoding.UTF8.GetString(bytes);
        var line = text.Split('\n').FirstOrDefault(l => l.StartsWith("database=", StringComparison.Ordinal));
        return line is null
            ? throw new InvalidOperationException($"The object store's binding marker ({ObjectKeys.StateBinding}) is not one this Coordinator wrote: '{text.Trim()}'.")
            : line["database=".Length..].Trim();
    }
}
