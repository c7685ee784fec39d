#!/bin/sh
# sha256, mode and owner of every network manager's configuration file on the node (and the
# files netplan renders), one line per file or symlink: what "nothing changed" and
# "restored" compare.
set -eu
for dir in /etc/netplan /etc/network /etc/NetworkManager /etc/systemd/network /run/systemd/network /etc/modules-load.d /var/lib/n3x; do
  [ -d "$dir" ] || continue
  find "$dir" \( -type f -o -type l \) -print | LC_ALL=C sort | while read -r path; do
    if [ -L "$path" ]; then
      echo "link $(readlink "$path") $path"
    else
      echo "$(sha256sum < "$path" | cut -d' ' -f1) $(stat -c '%a %U:%G' "$path") $path"
    fi
  done
done
