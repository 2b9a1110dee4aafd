using System.Diagnostics;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using MsdFleet.Protocol;
using MsdFleet.Protocol.Chunking;
using MsdFleet.Protocol.Manifests;
using MsdFleet.Protocol.Messages;
using MsdFleet.Protocol.Naming;
using MsdFleet.Protocol.Serialization;
using MsdFleet.Protocol.Signing;

// Feeds generated inputs (random bytes, and mutations of valid encodings: flipped bits, truncations,
// splices, length-field edits) to every decoder that sees untrusted bytes, to the name rules and to the
// Range header parser. A crash, a hang (per-input deadline) or an exception other than the documented
// ones fails the run. Usage: dotnet run -c Release --project bench/Fuzz [TOTAL_INPUTS] [SEED]
var total = args.Length > 0 ? long.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 1_000_000;
var seed = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 1;
var random = new Random(seed);
using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);

var digest = "sha256:" + new string('a', 64);
var seeds = new Dictionary<string, byte[]>
{
    ["manifest"] = new ImageManifest
    {
        Size = 300,
        Sha256 = new byte[32],
        Chunker = ChunkerParameters.Default,
        Chunks = [new ManifestChunk { Id = new byte[32], Length = 100 }, new ManifestChunk { Id = Enumerable.Repeat((byte)7, 32).ToArray(), Length = 200 }],
    }.ToBytes(),
    ["desired"] = ProtocolSerializer.Serialize(new DesiredState { Generation = 5, AgentId = "a", Drives = [new DesiredDrive { Index = 0, ImageDigest = digest, Mode = DriveMode.Cdrom, Connected = true, ImageName = "x.iso" }] }),
    ["report"] = ProtocolSerializer.Serialize(new AgentReport
    {
        AgentVersion = "1",
        Labels = new Dictionary<string, string> { ["k"] = "v" },
        Drives = [new DriveReport { Index = 0, ImageDigest = digest, HostState = "configured" }],
        Cache = [new CachedImageReport { ImageDigest = digest, Size = 1 }],
        Transfers = [new TransferReport { ImageDigest = digest, BytesDone = 1, BytesTotal = 2 }],
    }),
    ["event"] = ProtocolSerializer.Serialize(new AgentEvent { Kind = AgentEventKind.PullProgress, ImageDigest = digest, Message = "m" }),
    ["layout"] = ProtocolSerializer.Serialize(new ImageLayout { Sources = ["api/v1/packs/x"], Chunks = [new ChunkLocation { Source = 0, Offset = 0 }] }),
};
seeds["signed"] = DesiredStateSigning.Sign(ProtocolSerializer.Deserialize<DesiredState>(seeds["desired"]), key);

var targets = new (string Name, Func<byte[], bool> Run)[]
{
    ("manifest", b => Expect<ProtocolFormatException>(() => ImageManifest.Parse(b))),
    ("desired", b => Expect<ProtocolFormatException>(() => ProtocolSerializer.Deserialize<DesiredState>(b))),
    ("report", b => Expect<ProtocolFormatException>(() => ProtocolSerializer.Deserialize<AgentReport>(b))),
    ("event", b => Expect<ProtocolFormatException>(() => ProtocolSerializer.Deserialize<AgentEvent>(b))),
    ("layout", b => Expect<ProtocolFormatException>(() => ProtocolSerializer.Deserialize<ImageLayout>(b))),
    ("signed", b => Expect<DesiredStateRejectedException>(() => DesiredStateSigning.Verify(b, key, "a"))),
};
var counts = new Dictionary<string, (long Inputs, long Accepted)>();
var clock = Stopwatch.StartNew();
var perTarget = total / (targets.Length + 3);
foreach (var (name, run) in targets)
{
    long accepted = 0;
    var baseBytes = seeds[name];
    for (long i = 0; i < perTarget; i++)
    {
        var input = Mutate(baseBytes, random);
        var started = Stopwatch.GetTimestamp();
        if (run(input))
            accepted++;
        if (Stopwatch.GetElapsedTime(started) > TimeSpan.FromSeconds(1))
            Fail(name, input, "took over a second (hang)");
    }
    counts[name] = (perTarget, accepted);
}

// Names and agent ids: random strings from a nasty alphabet, and mutations of valid names.
string[] alphabet = ["a", "Z", "0", ".", "..", "/", "\\", "-", "_", " ", "\u0000", "\u0001", "\n", "\u007f", "\u202e", "\u200b", "é", "😀", "\ud800", "\udc00", "+", "#", "%2F"];
long namesAccepted = 0, idsAccepted = 0, topicsAccepted = 0;
var topics = new TopicNames();
for (long i = 0; i < perTarget; i++)
{
    var text = string.Concat(Enumerable.Range(0, random.Next(0, 300)).Select(_ => alphabet[random.Next(alphabet.Length)]));
    if (NameRules.TryValidateImageName(text, out var error))
    {
        namesAccepted++;
        if (text is "." or ".." || text.Contains('/', StringComparison.Ordinal) || text.Contains('\\', StringComparison.Ordinal) || text.Any(char.IsControl)
            || System.Text.Encoding.UTF8.GetByteCount(text) > 255)
            Fail("names", System.Text.Encoding.UTF8.GetBytes(text), "accepted a forbidden name");
    }
    else if (string.IsNullOrEmpty(error))
    {
        Fail("names", System.Text.Encoding.UTF8.GetBytes(text), "rejected without a reason");
    }
    if (NameRules.TryValidateAgentId(text, out _))
    {
        idsAccepted++;
        _ = topics.Desired(text); // must never throw for an accepted id
    }
    if (topics.TryParseAgentTopic("msdfleet/v1/agents/" + text, out _, out _))
        topicsAccepted++;
}
counts["names"] = (perTarget, namesAccepted);
counts["agent-ids"] = (perTarget, idsAccepted);
counts["topics"] = (perTarget, topicsAccepted);

// Range headers: what the Coordinator's range handling parses before it seeks.
long rangesAccepted = 0;
string[] rangeParts = ["bytes", "=", "-", ",", "0", "1", "9", "18446744073709551615", "9223372036854775807", "-1", " ", "items", "\t", "=="];
var remaining = total - perTarget * (targets.Length + 2);
for (long i = 0; i < remaining; i++)
{
    var header = string.Concat(Enumerable.Range(0, random.Next(0, 12)).Select(_ => rangeParts[random.Next(rangeParts.Length)]));
    if (RangeHeaderValue.TryParse(header, out var range))
    {
        rangesAccepted++;
        foreach (var item in range.Ranges)
        {
            if (item.From is < 0 || item.To is < 0 || (item.From is { } f && item.To is { } t && f > t))
                Fail("range", System.Text.Encoding.ASCII.GetBytes(header), "accepted an inverted or negative range");
        }
    }
}
counts["range"] = (remaining, rangesAccepted);

long all = 0;
Console.WriteLine($"{"target",-10} {"inputs",10} {"accepted",10}");
foreach (var (name, (inputs, accepted)) in counts)
{
    Console.WriteLine($"{name,-10} {inputs,10} {accepted,10}");
    all += inputs;
}
Console.WriteLine($"{all} generated inputs in {clock.Elapsed.TotalSeconds:F1} s: no crash, no hang, no undocumented exception");
return 0;

static bool Expect<TDocumented>(Action action) where TDocumented : Exception
{
    try
    {
        action();
        return true;
    }
    catch (TDocumented)
    {
        return false;
    }
}

static byte[] Mutate(byte[] valid, Random random)
{
    switch (random.Next(6))
    {
        case 0:
            var noise = new byte[random.Next(0, 96)];
            random.NextBytes(noise);
            return noise;
        case 1:
            return valid[..random.Next(0, valid.Length + 1)];
        default:
            var copy = valid.ToList();
            for (var n = random.Next(1, 6); n > 0 && copy.Count > 0; n--)
            {
                var at = random.Next(copy.Count);
                switch (random.Next(4))
                {
                    case 0: copy[at] ^= (byte)(1 << random.Next(8)); break;
                    case 1: copy[at] = (byte)random.Next(256); break;
                    case 2: copy.Insert(at, (byte)random.Next(256)); break;
                    default: copy.RemoveAt(at); break;
                }
            }
            // Length fields pushed to extremes exercise the untrusted-data limits.
            if (random.Next(10) == 0 && copy.Count > 1)
                copy[random.Next(copy.Count)] = random.Next(2) == 0 ? (byte)0xdd : (byte)0xdf;
            return [.. copy];
    }
}

static void Fail(string target, byte[] input, string why)
{
    Console.Error.WriteLine($"FAIL {target}: {why}; input {Convert.ToHexString(input)}");
    Environment.Exit(1);
}
