using Microsoft.Win32.SafeHandles;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>One pull in progress: what is pulled (digest, manifest, chunk offsets), where to (the partial file), and how far it got.</summary>
/// <see cref="Throttle"/>: this pull's own cap (its policy's), on top of the agent's shared one; null for none.
public sealed record PullSession(ImageDigest Digest, ImageManifest Manifest, long[] Offsets, SafeFileHandle Handle, JournalCommitter Committer, TransferProgress Progress)
{
    public BandwidthThrottle? Throttle { get; init; }
}
