using Microsoft.Win32.SafeHandles;
using MsdFleet.Protocol.Manifests;

namespace MsdFleet.EdgeAgent.Transfers;

/// <summary>One pull in progress: what is pulled (digest, manifest, chunk offsets), where to (the partial file), and how far it got.</summary>
public sealed record PullSession(ImageDigest Digest, ImageManifest Manifest, long[] Offsets, SafeFileHandle Handle, JournalCommitter Committer, TransferProgress Progress);
