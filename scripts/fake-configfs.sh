#!/usr/bin/env bash
# Lays out a directory tree like configfs + sysfs for one mass-storage gadget, so the agent's real
# configfs driver can run without a kernel gadget (demo and tests). Usage: fake-configfs.sh DIR [LUNS]
set -euo pipefail
dir=$1; luns=${2:-1}
fn="$dir/configfs/usb_gadget/kvmd/functions/mass_storage.usb0"
for ((i = 0; i < luns; i++)); do
  mkdir -p "$fn/lun.$i"
  for attr in file cdrom ro removable forced_eject nofua inquiry_string; do
    [ -e "$fn/lun.$i/$attr" ] || : > "$fn/lun.$i/$attr"
  done
done
mkdir -p "$dir/udc/dummy_udc.0"
echo dummy_udc.0 > "$dir/configfs/usb_gadget/kvmd/UDC"
echo configured > "$dir/udc/dummy_udc.0/state"
