using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace MsdFleet.EdgeAgent.Tests.Gadget.Kvmd;

/// <summary>
/// kvmd's MSD API in-process: a Kestrel server on a unix socket (or, as nginx would show it, on loopback
/// TCP under <c>/api</c>) with kvmd's envelope, error classes, statuses, preconditions and transitions as
/// pikvm/kvmd f14596e8 defines them (<c>kvmd/apps/kvmd/api/msd.py</c>, <c>kvmd/plugins/msd/otg/__init__.py</c>
/// <c>Plugin.set_params</c>/<c>set_connected</c>/<c>get_state</c>, <c>_State.check_online_*</c>,
/// <c>kvmd/htserver.py</c>, <c>kvmd/apps/kvmd/api/auth.py</c> <c>_check_xhdr</c>). Its storage is a temp
/// folder scanned on every request, skipping what kvmd's <c>fs._list_dir</c> skips. Switches let a test make
/// it busy, offline, disabled, failing, stalled, or change the drive behind the agent's back as kvmd's UI would.
/// </summary>
public sealed partial class KvmdStandIn : IAsyncDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly Lock _lock = new();
    private readonly List<string> _requests = [];
    private readonly HashSet<string> _notWritable = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _hidden = new(StringComparer.Ordinal);
    private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly string? _user;
    private readonly string? _password;
    private readonly string _prefix;
    private WebApplication? _app;

    // kvmd's _VirtualDrive: the selection lives in memory; connected means configfs holds the file.
    private string? _image;
    private bool _imageInStorage = true;
    private bool _connected;
    private bool _cdrom;
    private bool _rw;
    private bool _busy;
    private bool _offline;
    private bool _disabled;
    private bool _fail500;
    private bool _stall;

    private KvmdStandIn(string? user, string? password, bool behindNginx)
    {
        _user = user;
        _password = password;
        _prefix = behindNginx ? "/api" : string.Empty;
        StorageRoot = Directory.CreateDirectory(Path.Combine(_dir.Path, "msd")).FullName;
        SocketPath = Path.Combine(_dir.Path, "kvmd.sock");
    }

    public string StorageRoot { get; }
    public string SocketPath { get; }

    /// <summary>Set when started <c>behindNginx</c>: the loopback URL whose <c>/api/…</c> reaches kvmd.</summary>
    public Uri? Url { get; private set; }

    /// <summary>Called with "METHOD /path?query" as each request arrives, before kvmd would handle it.</summary>
    public Action<string>? OnRequest { get; set; }

    public bool Busy { get => Get(() => _busy); set => Set(() => _busy = value); }
    public bool Offline { get => Get(() => _offline); set => Set(() => _offline = value); }
    public bool Disabled { get => Get(() => _disabled); set => Set(() => _disabled = value); }
    public bool Fail500 { get => Get(() => _fail500); set => Set(() => _fail500 = value); }

    /// <summary>Requests wait, unanswered, until the stand-in is disposed or the client gives up.</summary>
    public bool Stall { get => Get(() => _stall); set => Set(() => _stall = value); }

    public IReadOnlyList<string> Requests => Get(() => _requests.ToArray());

    /// <summary>The drive as kvmd holds it: selected/attached image name, connected, cdrom, rw.</summary>
    public (string? Image, bool Connected, bool Cdrom, bool Rw) Drive => Get(() => (_image, _connected, _cdrom, _rw));

    public static async Task<KvmdStandIn> StartAsync(string? user = null, string? password = null, bool behindNginx = false)
    {
        var standIn = new KvmdStandIn(user, password, behindNginx);
        await standIn.StartAsync();
        return standIn;
    }

    /// <summary>Puts a file into the storage; returns its absolute path.</summary>
    public string AddImage(string name, int bytes = 4096)
    {
        var path = Path.Combine(StorageRoot, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, new byte[bytes]);
        return path;
    }

    /// <summary>kvmd's writable flag is false for an adopted image its user cannot write.</summary>
    public void MarkNotWritable(string name) => Set(() => _notWritable.Add(name));

    /// <summary>As if inotify had not caught up yet: the next <paramref name="requests"/> requests do not list the image.</summary>
    public void HideFromScan(string name, int requests) => Set(() => _hidden[name] = requests);

    /// <summary>What kvmd's UI does: disconnect whatever is connected, select <paramref name="name"/>, connect it.</summary>
    public void PresentBehindAgentsBack(string name, bool cdrom, bool rw) => Set(() =>
    {
        if (!Scan().TryGetValue(name, out var writable))
            throw new InvalidOperationException($"{name} is not in the stand-in's storage");
        _image = name;
        _imageInStorage = true;
        _cdrom = cdrom;
        _rw = rw && !cdrom && writable;
        _connected = true;
    });

    /// <summary>
    /// What <c>kvmd-otgmsd -i 0 --set-image</c> does with a file outside the storage: kvmd then reports the
    /// connected image by its base name with <c>in_storage: false</c> (otg Storage.get_image_by_path).
    /// </summary>
    public void AttachByHand(string absolutePath, bool cdrom, bool rw) => Set(() =>
    {
        _image = Path.GetFileName(absolutePath);
        _imageInStorage = false;
        _cdrom = cdrom;
        _rw = rw;
        _connected = true;
    });

    public async ValueTask DisposeAsync()
    {
        _released.TrySetResult();
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
        _dir.Dispose();
    }

    /// <summary>Stops listening as a dead kvmd would; the socket file is gone afterwards.</summary>
    public async Task StopAsync()
    {
        _released.TrySetResult();
        if (_app is not null)
            await _app.StopAsync();
        if (File.Exists(SocketPath))
            File.Delete(SocketPath);
    }

    private async Task StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = _dir.Path, Args = [] });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            if (_prefix.Length == 0)
                kestrel.ListenUnixSocket(SocketPath);
            else
                kestrel.Listen(IPAddress.Loopback, 0);
        });
        var app = builder.Build();
        app.MapGet(_prefix + "/msd", context => Handle(context, _ => GetState()));
        app.MapPost(_prefix + "/msd/set_params", context => Handle(context, SetParams));
        app.MapPost(_prefix + "/msd/set_connected", context => Handle(context, SetConnected));
        await app.StartAsync();
        _app = app;
        if (_prefix.Length > 0)
        {
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            Url = new Uri(address + "/");
        }
    }

    private async Task Handle(HttpContext context, Func<IQueryCollection, object> handler)
    {
        var line = $"{context.Request.Method} {context.Request.Path}{context.Request.QueryString}";
        Set(() => _requests.Add(line));
        OnRequest?.Invoke(line);
        if (Stall)
        {
            try
            {
                await _released.Task.WaitAsync(context.RequestAborted);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
        if (Fail500)
        {
            // aiohttp's answer to an exception kvmd does not map: no envelope.
            context.Response.StatusCode = 500;
            context.Response.ContentType = "text/plain; charset=utf-8";
            await context.Response.WriteAsync("500 Internal Server Error\n\nServer got itself in trouble");
            return;
        }
        int status;
        object result;
        try
        {
            CheckAuth(context.Request.Headers);
            lock (_lock)
            {
                try
                {
                    result = handler(context.Request.Query);
                }
                finally
                {
                    foreach (var name in _hidden.Keys.ToArray())
                        if (--_hidden[name] <= 0)
                            _hidden.Remove(name);
                }
            }
            status = 200;
        }
        catch (KvmdError ex)
        {
            status = ex.Status;
            result = new { error = ex.Class, error_msg = ex.Message };
        }
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(JsonSerializer.Serialize(new { ok = status == 200, result }));
    }

    // api/auth.py: X-KVMD-User present → its password must match (else 403); nothing → 401.
    private void CheckAuth(IHeaderDictionary headers)
    {
        if (_user is null)
            return;
        var user = headers["X-KVMD-User"].ToString();
        if (user.Length == 0)
            throw new KvmdError("UnauthorizedError", "Unauthorized", 401);
        if (user != _user || headers["X-KVMD-Passwd"].ToString() != _password)
            throw new KvmdError("ForbiddenError", "Forbidden", 403);
    }

    private object GetState()
    {
        if (_disabled)
            return new { enabled = false, online = false, busy = false, storage = (object?)null, drive = (object?)null };
        if (_offline)
            return new { enabled = true, online = false, busy = _busy, storage = (object?)null, drive = (object?)null };
        var images = Scan();
        // _State.set_online: a selected (not connected) image that vanished is unselected.
        if (!_connected && _image is not null && !images.ContainsKey(_image))
            _image = null;
        object? image = _image is null ? null : new
        {
            name = _image,
            in_storage = _imageInStorage,
            complete = true,
            removable = true,
            writable = images.GetValueOrDefault(_image),
            size = 4096,
            mod_ts = 0.0,
        };
        return new
        {
            enabled = true,
            online = true,
            busy = _busy,
            storage = new
            {
                images = images.ToDictionary(i => i.Key, i => new { complete = true, removable = true, writable = i.Value, size = 4096, mod_ts = 0.0 }),
                parts = new Dictionary<string, object> { [""] = new { size = 1L << 30, free = 1L << 29, writable = true } },
                downloading = (object?)null,
                uploading = (object?)null,
            },
            drive = new { image, connected = _connected, cdrom = _cdrom, rw = _rw },
        };
    }

    // api/msd.py __set_params_handler, then otg Plugin.set_params.
    private object SetParams(IQueryCollection query)
    {
        string? name = null;
        var image = query["image"];
        if (image.Count > 0)
        {
            var value = image.ToString().Trim();
            if (RemoteUrl().IsMatch(value))
                throw new KvmdError("MsdRemoteDisabledError", "Remote images binding is disabled", 400);
            name = ValidImageName(value);
        }
        bool? cdrom = query.ContainsKey("cdrom") ? ValidBool(query["cdrom"]) : null;
        bool? rw = query.ContainsKey("rw") ? ValidBool(query["rw"]) : null;
        var images = CheckOnlineDisconnected();
        if (name is not null)
        {
            if (name.Length == 0)
                _image = null;
            else
                _image = images.ContainsKey(name) ? name : throw new KvmdError("MsdUnknownImageError", "The image is not found in the storage", 400);
            _imageInStorage = true;
        }
        if (cdrom is { } c)
            _cdrom = c;
        if (rw is { } r)
            _rw = r;
        if (_rw && (_cdrom || (_image is not null && !images[_image])))
            _rw = false;
        return new { };
    }

    // api/msd.py __set_connected_handler, then otg Plugin.set_connected.
    private object SetConnected(IQueryCollection query)
    {
        var connected = ValidBool(query["connected"]);
        if (connected)
        {
            var images = CheckOnlineDisconnected();
            if (_image is null)
                throw new KvmdError("MsdImageNotSelected", "The image is not selected", 400);
            if (!images.ContainsKey(_image))
                throw new KvmdError("MsdUnknownImageError", "The image is not found in the storage", 400);
            _connected = true;
        }
        else
        {
            CheckOnline();
            if (!_connected)
                throw new KvmdError("MsdDisconnectedError", "MSD is disconnected from Server, but should be for this operation", 400);
            _connected = false;
            // _State.set_online: a hand-attached image from outside the storage does not stay selected.
            if (!_imageInStorage)
                (_image, _imageInStorage) = (null, true);
        }
        return new { };
    }

    private Dictionary<string, bool> CheckOnline()
    {
        // The exclusive region is entered before anything is checked: busy wins over every other error.
        if (_busy)
            throw new KvmdError("MsdIsBusyError", "Performing another MSD operation, please try again later", 409);
        if (_disabled)
            throw new KvmdError("MsdDisabledError", "MSD is disabled", 400);
        if (_offline)
            throw new KvmdError("MsdOfflineError", "MSD is not found", 400);
        return Scan();
    }

    private Dictionary<string, bool> CheckOnlineDisconnected()
    {
        var images = CheckOnline();
        if (_connected)
            throw new KvmdError("MsdConnectedError", "MSD is connected to Server, but shouldn't for this operation", 400);
        return images;
    }

    /// <summary>Image name → writable, as otg Storage.reload and fs._list_dir see the storage.</summary>
    private Dictionary<string, bool> Scan()
    {
        var images = new Dictionary<string, bool>(StringComparer.Ordinal);
        void Walk(string dir)
        {
            foreach (var entry in new DirectoryInfo(dir).EnumerateFileSystemInfos().OrderBy(e => e.Name, StringComparer.Ordinal))
            {
                if (entry.Name.StartsWith('.') || entry.Name == "lost+found" || entry.LinkTarget is not null)
                    continue;
                if (entry is DirectoryInfo)
                {
                    Walk(entry.FullName);
                    continue;
                }
                var name = Path.GetRelativePath(StorageRoot, entry.FullName);
                if (_hidden.ContainsKey(name))
                    continue;
                images[name] = !name.EndsWith(".iso", StringComparison.OrdinalIgnoreCase) && !_notWritable.Contains(name);
            }
        }
        Walk(StorageRoot);
        return images;
    }

    // validators/kvm.py valid_msd_image_name(allow_eject=True) with validators/os.py valid_printable_filename.
    private static string ValidImageName(string value)
    {
        if (value.Length == 0)
            return string.Empty;
        var parts = value.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0 || parts.Any(p => p.Trim().Length == 0 || p.StartsWith('.') || p == "lost+found"))
            throw new KvmdError("ValidatorError", $"The argument '{value}' must be MSD image name", 400);
        return string.Join('/', parts.Select(p => p.Trim()));
    }

    // validators/basic.py valid_bool.
    private static bool ValidBool(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        "1" or "true" or "yes" => true,
        "0" or "false" or "no" => false,
        _ => throw new KvmdError("ValidatorError", $"The argument '{value}' must be bool (['1', 'true', 'yes'] or ['0', 'false', 'no'])", 400),
    };

    [GeneratedRegex(@"^[a-zA-Z][a-zA-Z0-9._+-]+[a-zA-Z]://[a-zA-Z0-9\[]")]
    private static partial Regex RemoteUrl();

    private T Get<T>(Func<T> read)
    {
        lock (_lock)
            return read();
    }

    private void Set(Action write)
    {
        lock (_lock)
            write();
    }

    private sealed class KvmdError(string @class, string message, int status) : Exception(message)
    {
        public string Class { get; } = @class;
        public int Status { get; } = status;
    }
}
