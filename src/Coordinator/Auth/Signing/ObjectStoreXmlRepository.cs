using System.Text;
using System.Xml.Linq;
using Microsoft.AspNetCore.DataProtection.Repositories;
using MsdFleet.Coordinator.Storage;

namespace MsdFleet.Coordinator.Auth;

/// <summary>
/// Keeps ASP.NET Core's data-protection keys (which seal session cookies and CSRF tokens) in the object
/// store, so sessions survive a restart and every replica accepts every other replica's cookies. The key
/// ring is read rarely (at start and on rotation), so the synchronous bridge here costs nothing.
/// </summary>
public sealed class ObjectStoreXmlRepository(IObjectStore store) : IXmlRepository
{
    private const string Prefix = Storage.ObjectKeys.DataProtectionPrefix;

    public IReadOnlyCollection<XElement> GetAllElements() => Task.Run(async () =>
    {
        var elements = new List<XElement>();
        await foreach (var key in store.ListAsync(Prefix, CancellationToken.None))
        {
            if (await store.GetBytesAsync(key, 1024 * 1024, CancellationToken.None) is { } bytes)
                elements.Add(XElement.Parse(Encoding.UTF8.GetString(bytes)));
        }
        return (IReadOnlyCollection<XElement>)elements;
    }).GetAwaiter().GetResult();

    public void StoreElement(XElement element, string friendlyName)
    {
        ArgumentNullException.ThrowIfNull(element);
        var safe = new string((friendlyName ?? "key").Where(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_').ToArray());
        var name = Prefix + (safe.Length == 0 ? Guid.NewGuid().ToString("N") : safe) + ".xml";
        Task.Run(async () =>
        {
            await store.PutAsync(name, Encoding.UTF8.GetBytes(element.ToString(SaveOptions.DisableFormatting)), CancellationToken.None);
            await store.FlushAsync(CancellationToken.None);
        }).GetAwaiter().GetResult();
    }
}
