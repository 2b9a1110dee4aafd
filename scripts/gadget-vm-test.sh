#!/usr/bin/env bash
# Real-kernel test of the agent's configfs driver. Boots Debian's stock kernel in qemu (TCG) with
# dummy_hcd, whose virtual UDC loops the USB gadget back to the same kernel's host side, and runs the
# agent's own `drive` command inside the VM: `drive setup` builds and binds a gadget with two
# mass_storage functions (drive 0 flash, drive 1 CD-ROM), `drive attach`/`eject` drive them, and
# `drive watch` reports what the host read and wrote per drive (fanotify + the function thread's I/O
# counters). The VM's host side checks: the flash image appears as /dev/sdX with identical bytes and
# read-only; the host's 3 MiB read is reported exactly, on drive 0 only; a gentle eject is refused while
# the host holds the device open, a forced one is not; a writable drive takes the host's writes into its
# backing file and the watch reports the bytes written; both drives are visible at once and eject
# independently; the ISO appears as /dev/srX with identical bytes. Prints "CHECK <name> ok|FAIL" lines and
# exits non-zero unless every check passed — including when the gadget never binds.
# Usage: scripts/gadget-vm-test.sh [WORKDIR]    (installs qemu etc. with apt when missing)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$root/.cache/gadget-vm}
mkdir -p "$work"

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
{ command -v depmod || [ -x /sbin/depmod ]; } >/dev/null || need+=(kmod)
command -v xorriso >/dev/null || need+=(xorriso)
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
busybox=$(command -v busybox)
file "$busybox" 2>/dev/null | grep -q "statically linked" || busybox=/bin/busybox

# 1. The kernel: Debian's stock image package, unpacked (never installed).
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
if [ -z "$kpkg" ]; then apt-get update -qq >/dev/null; kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'); fi
kdir="$work/$kpkg"
if [ ! -f "$kdir/done" ]; then
  rm -rf "$kdir"; mkdir -p "$kdir"
  (cd "$kdir" && apt-get download "$kpkg" >/dev/null 2>&1 && dpkg -x ./*.deb x && rm -f ./*.deb)
  kver=$(ls "$kdir/x/lib/modules")
  "$(command -v depmod || echo /sbin/depmod)" -b "$kdir/x" "$kver"
  touch "$kdir/done"
fi
kver=$(ls "$kdir/x/lib/modules")
mods="$kdir/x/lib/modules/$kver"

# 2. The agent as shipped (NativeAOT, one executable) for linux-x64, and the shared libraries it needs.
pub="$work/agent"
"$root/scripts/publish-native-agent.sh" linux-x64 "$pub"

# 3. The initramfs.
rd="$work/initramfs"
rm -rf "$rd"; mkdir -p "$rd"/{bin,sbin,proc,sys,dev,tmp,img,opt/agent,lib/modules,etc}
cp "$busybox" "$rd/bin/busybox"
for app in sh mount mkdir echo cat ls sleep sha256sum head dd cmp insmod poweroff ln rmdir test tr wc grep sync stat tail; do ln -sf busybox "$rd/bin/$app"; done
cp "$pub/msdfleet-agent" "$pub/appsettings.json" "$rd/opt/agent/"
for f in "$pub/msdfleet-agent"; do ldd "$f" 2>/dev/null | awk '/=> \// { print $3 } /^\t\// { print $1 }'; done | sort -u | while read -r lib; do
  mkdir -p "$rd$(dirname "$lib")"; cp -L "$lib" "$rd$lib"
done
mkdir -p "$rd/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$rd/lib64/"

# Modules in load order, dependencies first (from modules.dep).
declare -A seen; order=()
add_module() {
  local rel=$1 dep
  [ -n "${seen[$rel]:-}" ] && return; seen[$rel]=1
  for dep in $(awk -F': ' -v m="$rel" '$1 == m { print $2 }' "$mods/modules.dep"); do add_module "$dep"; done
  order+=("$rel")
}
for m in crypto/crct10dif_generic.ko lib/crc64-rocksoft.ko drivers/usb/gadget/udc/dummy_hcd.ko \
         drivers/usb/gadget/function/usb_f_mass_storage.ko drivers/usb/storage/usb-storage.ko \
         drivers/scsi/sd_mod.ko drivers/scsi/sr_mod.ko; do
  [ -f "$mods/kernel/$m" ] && add_module "kernel/$m"
done
: > "$rd/etc/modules"
for rel in "${order[@]}"; do
  base=$(basename "$rel")
  case "$base" in
    *.ko.xz) xz -dc "$mods/$rel" > "$rd/lib/modules/${base%.xz}"; base=${base%.xz};;
    *) cp "$mods/$rel" "$rd/lib/modules/$base";;
  esac
  echo "$base" >> "$rd/etc/modules"
done

# Test media: a random flash image, a writable scratch image, the pattern the host writes, and a real ISO.
head -c $((4 * 1024 * 1024)) /dev/urandom > "$rd/img/flash.img"
head -c $((4 * 1024 * 1024)) /dev/zero > "$rd/img/scratch.img"
head -c $((1024 * 1024)) /dev/urandom > "$rd/img/pattern.bin"
pattern_sha=$(sha256sum "$rd/img/pattern.bin" | cut -d' ' -f1)
mkdir -p "$work/isotree"; head -c $((3 * 1024 * 1024)) /dev/urandom > "$work/isotree/payload.bin"
xorriso -as mkisofs -quiet -R -V MSDFLEET -o "$rd/img/cd.iso" "$work/isotree" 2>/dev/null
flash_sha=$(sha256sum "$rd/img/flash.img" | cut -d' ' -f1)
iso_size=$(stat -c %s "$rd/img/cd.iso"); iso_sha=$(sha256sum "$rd/img/cd.iso" | cut -d' ' -f1)

cat > "$rd/init" <<INIT
#!/bin/sh
export PATH=/bin:/sbin DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 DOTNET_gcServer=0 HOME=/tmp
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mkdir -p /dev/pts
for m in \$(cat /etc/modules); do
  case \$m in usb-storage.ko) insmod /lib/modules/\$m delay_use=0 ;; *) insmod /lib/modules/\$m ;; esac
done
mount -t configfs none /sys/kernel/config 2>/dev/null || true
check() { if [ "\$2" = "\$3" ]; then echo "CHECK \$1 ok"; else echo "CHECK \$1 FAIL (got '\$2', want '\$3')"; fi; }
wait_for() { i=0; while [ \$i -lt 100 ]; do [ -e "\$1" ] && return 0; sleep 0.1; i=\$((i+1)); done; return 1; }
# The watch is a .NET process: under TCG it needs seconds to start; act only once it says it watches.
wait_watching() { i=0; while [ \$i -lt 300 ]; do grep -q '^watching' "\$1" 2>/dev/null && return 0; sleep 0.1; i=\$((i+1)); done; return 1; }

# The agent builds and binds its own gadget (libcomposite): two mass_storage functions, drive 1 a CD-ROM
# drive from the start, because a host learns a LUN's device type when it enumerates.
g=/sys/kernel/config/usb_gadget/msdfleet
agent="/opt/agent/msdfleet-agent drive"
export Gadget__ConfigfsRoot=/sys/kernel/config Gadget__GadgetName=msdfleet Gadget__FunctionName=mass_storage.0
\$agent setup --functions 2 --cdrom-lun 1
check two-functions "\$(ls -d \$g/configs/c.1/mass_storage.* | wc -l)" "2"
udc=\$(cat \$g/UDC)
check udc-bound "\$udc" "dummy_udc.0"

\$agent attach /img/flash.img --ro
wait_for /sys/block/sda && sleep 0.5
check flash-device "\$(ls /sys/block | grep -c '^sd')" "1"
check flash-bytes "\$(head -c $((4 * 1024 * 1024)) /dev/sda 2>/dev/null | sha256sum | cut -d' ' -f1)" "$flash_sha"
check flash-readonly "\$(cat /sys/block/sda/ro 2>/dev/null)" "1"
\$agent status
check host-configured "\$(cat /sys/class/udc/\$udc/state)" "configured"

# Proof the host read this drive: the host reads 3 MiB (direct, past its page cache) while the agent watches.
\$agent watch --seconds 4 > /tmp/watch1.txt 2>&1 &
w=\$!
wait_watching /tmp/watch1.txt
dd if=/dev/sda of=/dev/null bs=1M count=3 iflag=direct 2>/dev/null
wait \$w
cat /tmp/watch1.txt
check host-read-bytes-drive0 "\$(grep '^lun=0 ' /tmp/watch1.txt | grep -o 'host-read-bytes=[0-9]*')" "host-read-bytes=3145728"
check host-read-seen-drive0 "\$(grep '^lun=0 ' /tmp/watch1.txt | grep -o ' read=[01]')" " read=1"

exec 3</dev/sda
# While the host holds the device, a gentle eject is refused (what a snapshot relies on); a forced one is not.
\$agent eject --gentle 2>/dev/null && echo "gentle eject went through"
check gentle-eject-refused-while-held "\$(cat \$g/functions/mass_storage.0/lun.0/file)" "/img/flash.img"
\$agent eject
sleep 1
# A new open makes the host re-check the medium (while fd 3 still holds the device).
check eject-no-medium "\$([ -e /sys/block/sda ] && head -c 512 /dev/sda 2>/dev/null | wc -c)" "0"
check eject-size-zero "\$(cat /sys/block/sda/size 2>/dev/null)" "0"
check eject-file-empty "\$(cat \$g/functions/mass_storage.0/lun.0/file)" ""
exec 3<&-

# A writable drive: the host's writes land in the backing file, and the watch counts them.
\$agent attach /img/scratch.img
sleep 1
\$agent watch --seconds 4 > /tmp/watch2.txt 2>&1 &
w=\$!
wait_watching /tmp/watch2.txt
dd if=/img/pattern.bin of=/dev/sda bs=1M count=1 seek=1 oflag=direct conv=notrunc 2>/dev/null
wait \$w
cat /tmp/watch2.txt
check host-written-bytes-drive0 "\$(grep '^lun=0 ' /tmp/watch2.txt | grep -o 'host-written-bytes=[0-9]*')" "host-written-bytes=1048576"

# Both drives at once, on two functions: the CD-ROM appears while the flash drive stays.
wait_for /sys/block/sr0
\$agent attach /img/cd.iso --cdrom --lun 1
sleep 1
check both-drives-readable "\$(head -c 512 /dev/sda 2>/dev/null | wc -c) \$(head -c 2048 /dev/sr0 2>/dev/null | wc -c)" "512 2048"
\$agent eject --gentle
check flash-ejected-gently "\$(cat \$g/functions/mass_storage.0/lun.0/file)" ""
check writes-in-backing-file "\$(dd if=/img/scratch.img bs=1M skip=1 count=1 2>/dev/null | sha256sum | cut -d' ' -f1)" "$pattern_sha"
check cdrom-device "\$(ls /sys/block | grep -c '^sr')" "1"
check cdrom-bytes "\$(head -c $iso_size /dev/sr0 2>/dev/null | sha256sum | cut -d' ' -f1)" "$iso_sha"
check cdrom-readonly "\$(cat /sys/block/sr0/ro 2>/dev/null)" "1"
\$agent eject --lun 1
echo "VM-TEST-DONE"
sync
poweroff -f
INIT
chmod +x "$rd/init"
(cd "$rd" && find . | cpio -o -H newc --quiet > "$work/initramfs.cpio")

# 4. Boot under TCG (no KVM here) and read the verdict from the serial console.
log="$work/serial.log"
timeout 300 qemu-system-x86_64 -accel tcg -m 1536 -smp 1 -nographic -no-reboot \
  -kernel "$kdir/x/boot/vmlinuz-$kver" -initrd "$work/initramfs.cpio" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3" > "$log" 2>&1 || true
clean() { sed -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\r//g' "$log"; }
clean | grep -oE "CHECK .*" || true
expected="udc-bound two-functions flash-device flash-bytes flash-readonly host-configured host-read-bytes-drive0 host-read-seen-drive0 gentle-eject-refused-while-held eject-no-medium eject-size-zero eject-file-empty host-written-bytes-drive0 both-drives-readable flash-ejected-gently writes-in-backing-file cdrom-device cdrom-bytes cdrom-readonly"
failed=0
for c in $expected; do
  if ! clean | grep -qE "CHECK $c ok$"; then echo "missing or failed: $c"; failed=1; fi
done
grep -q "VM-TEST-DONE" "$log" || { echo "the VM did not finish the test; serial log: $log"; failed=1; }
[ $failed -eq 0 ] && echo "gadget VM test: all checks passed" || { tail -n 40 "$log"; exit 1; }
