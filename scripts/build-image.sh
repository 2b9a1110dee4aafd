#!/usr/bin/env bash
# Builds the Coordinator's container image with podman (deploy/container/Containerfile) and prints its name.
#   scripts/build-image.sh                 → localhost/msdfleet/coordinator:<Version from Directory.Build.props>
#   MSDFLEET_IMAGE=registry.example.net/msdfleet/coordinator MSDFLEET_IMAGE_TAG=0.1.0 scripts/build-image.sh
#   MSDFLEET_IMAGE_BASE=mcr.microsoft.com/dotnet/runtime-deps:10.0 scripts/build-image.sh   (where mcr is reachable)
# Without MSDFLEET_IMAGE_BASE it makes a local Debian bookworm base with debootstrap holding what the official
# runtime-deps image holds (libc, libstdc++, OpenSSL, CA certificates, tzdata, ICU, the user app = UID 1654),
# cached (rootfs tarball under ${MSDFLEET_CONTAINER_CACHE:-~/.cache/msdfleet} and the podman image itself), so a
# second run only re-publishes and re-copies. Installs podman, runc and debootstrap with apt when missing.
# Progress goes to stderr; the last line on stdout is the image reference.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

version=$(sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' Directory.Build.props | head -1)
image=${MSDFLEET_IMAGE:-localhost/msdfleet/coordinator}
tag=${MSDFLEET_IMAGE_TAG:-$version}
cache=${MSDFLEET_CONTAINER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/msdfleet}
local_base=localhost/msdfleet/runtime-deps:10.0-bookworm
base=${MSDFLEET_IMAGE_BASE:-$local_base}
# These machines need runc and no default ulimits (see the file); harmless elsewhere.
export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/deploy/container/containers.conf}
log() { echo "build-image: $*" >&2; }

need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
[ "$base" != "$local_base" ] || command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

mkdir -p "$cache"
# One build at a time per machine: the base tarball, the publish folder and the tag are shared.
exec 9>"$cache/build-image.lock"
flock 9

if [ "$base" = "$local_base" ] && ! podman image exists "$local_base"; then
  rootfs_tar="$cache/runtime-deps-10.0-bookworm.tar"
  if [ ! -s "$rootfs_tar" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "error: debootstrap needs root (or set MSDFLEET_IMAGE_BASE)" >&2; exit 1; }
    log "making the local base $local_base with debootstrap (once; ~1 min)"
    rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=ca-certificates,libssl3,libicu72,tzdata,libstdc++6,zlib1g \
      bookworm "$rootfs" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 \
      || { echo "error: debootstrap failed, see $cache/debootstrap.log" >&2; exit 1; }
    # The user the official .NET images define: app, UID/GID 1654.
    chroot "$rootfs" groupadd --gid 1654 app
    chroot "$rootfs" useradd --uid 1654 --gid 1654 --no-log-init --create-home --shell /usr/sbin/nologin app
    # A base, not a system: no package caches or logs.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*
    tar -C "$rootfs" -cf "$rootfs_tar.partial" . && mv "$rootfs_tar.partial" "$rootfs_tar"
    rm -rf "$rootfs"; trap - EXIT
  fi
  log "importing $rootfs_tar as $local_base"
  podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV APP_UID=1654' "$rootfs_tar" "$local_base" >/dev/null
fi

# Self-contained: runtime-deps has no .NET runtime. Built under artifacts/container/ with its own obj and
# bin folders so it never disturbs the solution's normal Release build (or a test run using it).
publish="$root/deploy/container/publish"
log "publishing src/Coordinator (Release, linux-x64, self-contained)"
rm -rf "$publish"
dotnet publish src/Coordinator/MsdFleet.Coordinator.csproj -c Release -r linux-x64 --self-contained true \
  --artifacts-path "$root/artifacts/container" -o "$publish" -p:Version="$version" -v q --nologo -clp:NoSummary >&2

log "building $image:$tag on $base"
podman build --build-arg BASE="$base" --build-arg VERSION="$version" -t "$image:$tag" \
  -f deploy/container/Containerfile deploy/container >&2
echo "$image:$tag"
