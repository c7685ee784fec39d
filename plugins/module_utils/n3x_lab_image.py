# Copyright: n3x developers
# MIT License (see galaxy.yml)
"""Lab guest images: cache keys, the mmdebstrap command line and the build itself.

Pure Python (no Ansible imports) so it can be unit tested and used from scripts.
An image is a directory ``<cache_dir>/<key>/`` holding ``root.img`` (raw ext4, made
with ``mkfs.ext4 -d`` so no loop mount is needed), ``vmlinuz`` and ``initrd.img`` for
direct kernel boot, optionally ``esp.img`` (UEFI system partition with systemd-boot)
and ``manifest.json``. The key is the sha256 of everything that decides the content, so
an unchanged spec is reused at once and VMs get qcow2 overlays on top of ``root.img``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
import zlib

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_lab import HOST_ARCH, binfmt_enabled
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_process import Interrupted, check_still_wanted, interrupts_raise, wait_while_wanted

# Bump when the build procedure changes in a way that changes the image.
IMAGE_FORMAT = 3

DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Debian package that provides each host tool, for error messages.
HOST_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "dpkg-query": "dpkg",
    "systemctl": "systemd",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "chroot": "coreutils",
}

# Units that only cost boot time in a lab VM under TCG (measured: networking.service
# alone took 6 s; systemd-networkd is what configures the NICs).
DEFAULT_MASKED_UNITS = [
    "networking.service",
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "apt-daily.service",
    "apt-daily-upgrade.service",
    "man-db.timer",
    "fstrim.timer",
    "dpkg-db-backup.timer",
    "systemd-networkd-wait-online.service",
    "getty@tty1.service",
    "systemd-timesyncd.service",
    "ipvsadm.service",
    # Not needed by a lab node; each costs 0.5-2 s of CPU under TCG during boot.
    "systemd-logind.service",
    "dev-hugepages.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "systemd-sysusers.service",
    # The lab initrd mounts the root read-write already.
    "systemd-remount-fs.service",
    # Replaced by n3x-sshd.service (see SSHD_UNIT).
    "ssh.service",
    # Each costs CPU at every boot, which 3 VMs booting on 2 cores share: masking these
    # took a VM's boot from 18.2 to 15.3 CPU-seconds (QEMU's utime+stime until
    # `systemctl is-system-running --wait`). The modules they load are loaded on first
    # use (kmod-static-nodes still creates /dev/loop-control, /dev/fuse and friends).
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "modprobe@configfs.service",
    "modprobe@dm_mod.service",
    "modprobe@efi_pstore.service",
    "modprobe@fuse.service",
    "modprobe@loop.service",
    "systemd-network-generator.service",
    "systemd-random-seed.service",
    "systemd-pstore.service",
]

# Generators systemd runs at every boot that a lab VM has no use for (no encrypted,
# verity or integrity volumes, no hibernation, no SysV scripts without a native unit,
# no GPT auto-mounts); the fstab and getty generators stay.
DEFAULT_MASKED_GENERATORS = [
    "systemd-cryptsetup-generator",
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-integritysetup-generator",
    "systemd-rc-local-generator",
    "systemd-system-update-generator",
    "systemd-sysv-generator",
    "systemd-veritysetup-generator",
]

# udev loads these for the emulated CPU and chipset; a lab VM never uses them (no nested
# virtualisation, no frequency scaling) and each load costs CPU under TCG.
LAB_MODPROBE_CONF = """# n3x lab: drivers udev would load for QEMU's CPU and chipset, unused in a lab VM.
blacklist kvm_amd
blacklist kvm_intel
blacklist kvm
blacklist powernow_k8
blacklist acpi_cpufreq
blacklist serio_raw
"""

DEFAULT_ENABLED_UNITS = ["systemd-networkd.service", "n3x-sshd.service"]

# A small initrd (only what a virtio lab VM needs to mount its root) unpacks much faster
# under TCG than initramfs-tools' default MODULES=most.
DEFAULT_INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "ext4", "crc32c_generic"]

# The lab initrd (initrd-lab.img): busybox, the virtio modules and a short /init that
# mounts /dev/vda, sets up eth0 and switches to the root. Without udev it is ~5 s faster
# under TCG than the initramfs-tools one (which stays in the image as initrd.img). Loading
# virtio_net here also names the NICs eth0, eth1... strictly in PCI slot order. ext4 and
# crc32c are built into the amd64 cloud kernel but are modules in Debian's arm64 kernel.
LAB_INITRD_MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "crc32c_generic", "ext4"]
LAB_INIT = """#!/bin/busybox sh
# n3x lab initrd: load virtio, mount the root filesystem, hand over to systemd.
bb=/bin/busybox
$bb mount -t devtmpfs devtmpfs /dev
$bb mount -t proc proc /proc
for m in %(modules)s; do $bb insmod /lib/modules/$m.ko; done
root=/dev/vda
for arg in $($bb cat /proc/cmdline); do
  case $arg in n3x.root=*) root=${arg#n3x.root=} ;; esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 200 ]; do $bb usleep 50000; i=$((i + 1)); done
if ! $bb mount -t ext4 -o rw "$root" /newroot; then
  echo "n3x lab initrd: cannot mount $root"
  exec $bb sh
fi
# The management NIC gets QEMU user-mode networking's fixed guest address now, so SSH
# answers as soon as sshd runs instead of after udev and systemd-networkd (same config).
$bb ip link set eth0 up && $bb ip addr add 10.0.2.15/24 dev eth0 && $bb ip route add default via 10.0.2.2
$bb umount /proc
$bb mount --move /dev /newroot/dev
exec $bb switch_root /newroot /sbin/init
"""

# Documentation and translations are never read in the lab; skipping them saves
# build time and image size.
DEFAULT_DPKG_EXCLUDES = [
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
]

# eth0 is the user-mode management NIC: QEMU's slirp always uses 10.0.2.0/24 with the
# gateway on .2 and DNS on .3. A static address avoids waiting for DHCP under TCG.
# KeepConfiguration: the lab initrd set the same address already; never drop it.
MGMT_NETWORK = """[Match]
Name=eth0

[Network]
KeepConfiguration=static
Address=10.0.2.15/24
Gateway=10.0.2.2
DNS=10.0.2.3
LinkLocalAddressing=no
IPv6AcceptRA=no
"""

# Network manager variants of the lab image (issue 17): each one configures the lab NIC eth1 the
# way a stock install of that manager does, so that the networkd role meets what it meets on a
# real host. eth0 (SSH) stays with the lab's own systemd-networkd file (MGMT_NETWORK) in all of
# them: netplan's file for it sorts after 10-eth0-mgmt.network and is ignored by networkd
# (systemd.network(5): the first matching file in lexical order wins), NetworkManager is told
# to leave it alone, ifupdown has no stanza for it.
NETWORK_VARIANTS = {
    # Ubuntu cloud images: cloud-init writes 50-cloud-init.yaml (mode 0600) with dhcp4 on the
    # NICs; netplan's generator renders it for networkd at every boot
    # (/run/systemd/network/10-netplan-eth1.network, which sorts before 20-n3x-eth1.network).
    "netplan": {
        "packages": ["netplan.io"],
        "files": {
            "/etc/netplan/50-cloud-init.yaml": (
                0o600,
                "# This file is generated from information provided by the datasource.  Changes\n"
                "# to it will not persist across an instance reboot.  To disable cloud-init's\n"
                "# network configuration capabilities, write a file\n"
                "# /etc/cloud/cloud.cfg.d/99-disable-network-config.cfg with the following:\n"
                "# network: {config: disabled}\n"
                "network:\n"
                "    ethernets:\n"
                "        eth0:\n"
                "            dhcp4: true\n"
                "        eth1:\n"
                "            dhcp4: true\n"
                "    version: 2\n",
            ),
        },
        "unmask": [],
    },
    # Debian with network-manager: Debian's NetworkManager.conf (plugins=ifupdown,keyfile)
    # manages every Ethernet NIC without an ifupdown stanza and creates its in-memory
    # "Wired connection N" (DHCP) for it. The lab's conf.d file only keeps eth0 for networkd.
    "networkmanager": {
        "packages": ["network-manager"],
        "files": {
            "/etc/NetworkManager/conf.d/10-lab-eth0.conf": (
                0o644,
                "# n3x lab: eth0 (SSH) belongs to the lab's systemd-networkd file.\n[keyfile]\nunmanaged-devices=interface-name:eth0\n",
            ),
        },
        "unmask": [],
    },
    # Debian netinst: /etc/network/interfaces as the installer writes it for the NIC it
    # configured (allow-hotplug, DHCP with dhclient), sourcing interfaces.d; ifupdown's
    # networking.service runs again (the default lab image masks it).
    "ifupdown": {
        "packages": ["ifupdown", "isc-dhcp-client"],
        "files": {
            "/etc/network/interfaces": (
                0o644,
                "# This file describes the network interfaces available on your system\n"
                "# and how to activate them. For more information, see interfaces(5).\n"
                "\n"
                "source /etc/network/interfaces.d/*\n"
                "\n"
                "# The loopback network interface\n"
                "auto lo\n"
                "iface lo inet loopback\n"
                "\n"
                "# The primary network interface\n"
                "allow-hotplug eth1\n"
                "iface eth1 inet dhcp\n",
            ),
        },
        "unmask": ["networking.service"],
    },
}


SSHD_CONFIG = """# n3x lab: key-only root login, no DNS lookups (slow without a resolver).
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
"""


# Debian's ssh.service waits for network.target, i.e. for systemd-networkd to finish
# starting (~5 s under TCG). sshd listens on the wildcard address, so it can start
# before eth0 has its address; bookworm's ssh.socket only triggers ssh.service.
SSHD_UNIT = """[Unit]
Description=OpenSSH server (n3x lab: started early, not after network.target)
# No default dependencies: sshd needs only the root filesystem (mounted rw by the
# initrd) and /dev, so it need not wait for sysinit.target (~8 s under TCG).
DefaultDependencies=no
After=systemd-journald.socket
Conflicts=shutdown.target
Before=shutdown.target
ConditionPathExists=!/etc/ssh/sshd_not_to_be_run

[Service]
ExecStart=/usr/sbin/sshd -D
ExecReload=/bin/kill -HUP $MAINPID
RuntimeDirectory=sshd
RuntimeDirectoryMode=0755
KillMode=process
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""

# ---------------------------------------------------------------- A/B layout ---------
# layout "ab": one raw GPT disk (disk.img) like an edge board's: esp (FAT: GRUB and its
# grubenv), rootfs_a and rootfs_b (the same ext4 root filesystem, root.img, which is also
# what SWUpdate bundles carry) and data (ext4: staging space for updates). OVMF boots
# GRUB from the ESP; GRUB's environment chooses the slot and counts boot attempts.
LAYOUTS = ("single", "ab")
AB_PACKAGES = ["swupdate", "grub-common", "grub-efi-amd64-bin"]
AB_HARDWARE = "n3x-lab 1.0"
AB_BOOT_ATTEMPTS = 3
AB_ESP_MIB = 32
# The data partition holds a pushed bundle and swupdate's copy of its image (TMPDIR), so
# that the image is verified before anything is written; sparse, so it costs no space.
AB_DATA_EXTRA_MIB = 256
GPT_ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
GPT_LINUX = "0fc63daf-8483-4772-8e79-3d69d8477de4"
# GRUB modules built into the standalone EFI binary (nothing is read from disk).
AB_GRUB_MODULES = [
    "part_gpt", "fat", "ext2", "search", "search_fs_file", "loadenv", "regexp", "test",
    "echo", "linux", "sleep", "reboot", "normal", "efi_gop", "configfile",
]  # fmt: skip
AB_SLOT_PARTITIONS = {"a": 2, "b": 3}
AB_FACTORY_VERSION = "factory"

AB_FSTAB = """# n3x A/B lab image: the root is the slot GRUB chose (root=PARTLABEL=rootfs_a|b).
PARTLABEL=esp /boot/efi vfat defaults,umask=0077 0 2
PARTLABEL=data /data ext4 defaults,noatime,nofail 0 2
"""

# The health check that gates confirmation (n3x-boot-confirm), and its defaults; playbooks/
# ota.yml writes /etc/n3x/boot-confirm.conf, which updates carry over (preserved).
AB_CONFIRM_CONF = "/etc/n3x/boot-confirm.conf"
AB_CONFIRM_DEFAULTS = {"timeout": "120", "interfaces": "auto", "k3s": "auto", "check": ""}

AB_BOOT_CONFIRM = """#!/bin/sh
# n3x: confirm the booted A/B slot to GRUB once this node is healthy, or go back to the
# previous slot. Runs at every boot, from early on; only a trial boot (upgrade_available=1,
# which an update sets) has anything to decide. Healthy means, within `timeout` seconds:
#  - systemd-networkd has configured every interface its units name (interfaces=auto: each
#    Name= of /etc/systemd/network/*.network; or a list; or none),
#  - where k3s is enabled (k3s=auto; yes requires it), the node is Ready,
#  - and `check`, a command of the user's, succeeds (none by default).
# Confirmed: upgrade_available=0, boot_count=0, and swupdate's update markers (ustate,
# recovery_status) cleared. Not healthy in time: rootfs_slot=rootfs_fallback, ustate=3
# (failed), and a reboot into the previous slot.
set -u
env=/boot/grub/grubenv
conf=%(conf)s
timeout=%(timeout)s interfaces=%(interfaces)s k3s=%(k3s)s check=%(check)s
if [ -r "$conf" ]; then
  while IFS='=' read -r key value; do
    case $key in
      timeout) timeout=$value ;;
      interfaces) interfaces=$value ;;
      k3s) k3s=$value ;;
      check) check=$value ;;
    esac
  done < "$conf"
fi
case $timeout in '' | *[!0-9]*) echo "n3x: $conf: timeout=$timeout is not a number of seconds; using 120" >&2; timeout=120 ;; esac
var() { grub-editenv "$env" list | sed -n "s/^$1=//p"; }
[ "$(var upgrade_available)" = 1 ] || exit 0
slot=$(var rootfs_slot) fallback=$(var rootfs_fallback)
[ "$interfaces" = auto ] && interfaces=$(sed -n 's/^Name=//p' /etc/systemd/network/*.network 2>/dev/null | tr ' ' '\\n' | grep -v '[*?[]' | sort -u)
[ "$interfaces" = none ] && interfaces=
if [ "$k3s" = auto ]; then
  k3s=no
  for unit in k3s k3s-agent; do systemctl -q is-enabled "$unit" 2>/dev/null && k3s=yes; done
fi
healthy() {
  for name in $interfaces; do
    state=$(timeout 10 networkctl list --no-legend --no-pager 2>/dev/null | awk -v n="$name" '$2 == n { print $5 }')
    [ "$state" = configured ] || { reason="networkd has not configured $name (${state:-no such link})"; return 1; }
  done
  if [ "$k3s" = yes ]; then
    ready=$(timeout 20 k3s kubectl --kubeconfig /var/lib/rancher/k3s/agent/kubelet.kubeconfig get node "$(hostname)" \\
      -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)
    [ "$ready" = True ] || { reason="k3s node $(hostname) is not Ready (${ready:-no answer})"; return 1; }
  fi
  if [ -n "$check" ]; then
    timeout 60 sh -c "$check" >/dev/null 2>&1 || { reason="the check '$check' failed"; return 1; }
  fi
  return 0
}
reason="not checked yet"
deadline=$(( $(cut -d. -f1 /proc/uptime) + timeout ))
while ! healthy; do
  if [ "$(cut -d. -f1 /proc/uptime)" -ge "$deadline" ]; then
    grub-editenv "$env" set rootfs_slot="$fallback" upgrade_available=0 boot_count=0 ustate=3
    sync
    echo "n3x: slot $slot is not healthy after ${timeout}s: $reason; back to slot $fallback"
    systemctl --no-block reboot
    exit 1
  fi
  sleep 2
done
grub-editenv "$env" set upgrade_available=0 boot_count=0
grub-editenv "$env" unset ustate recovery_status
sync
echo "n3x: confirmed slot $slot (healthy: ${interfaces:-no interfaces to check}$( [ "$k3s" = yes ] && echo ', k3s Ready'))"
"""

# Started early (after the local filesystems, /boot/efi among them), not at the end of the
# boot: its deadline then also covers a boot that hangs in some other unit.
AB_BOOT_CONFIRM_UNIT = """[Unit]
Description=Confirm the booted A/B slot once the node is healthy (n3x)
DefaultDependencies=no
After=local-fs.target
RequiresMountsFor=/boot/efi
Conflicts=shutdown.target
Before=shutdown.target
ConditionPathExists=/boot/grub/grubenv

[Service]
Type=oneshot
RemainAfterExit=yes
TimeoutStartSec=infinity
ExecStart=/usr/local/sbin/n3x-boot-confirm
# The verdict on the serial console too: the journal of a trial boot is gone after a rollback.
StandardOutput=journal+console

[Install]
WantedBy=sysinit.target
"""

# The watchdog: the A/B initrd arms it before handing over (a slot whose userspace never
# takes it over is reset), systemd then pets it (RuntimeWatchdogSec) for as long as PID 1
# runs. QEMU's i6300esb when the kernel has its driver (Debian's generic kernel), else the
# kernel's softdog (Debian's cloud kernel has no i6300esb or iTCO driver).
AB_WATCHDOG_SEC = 30
AB_WATCHDOG_DRIVERS = {"i6300esb": "heartbeat", "softdog": "soft_margin"}
AB_WATCHDOG_CONF = f"""# n3x A/B image: systemd pets the watchdog the initrd armed; if PID 1 stops, the board resets.
[Manager]
RuntimeWatchdogSec={AB_WATCHDOG_SEC}s
RebootWatchdogSec=2min
"""

# The A/B image's initrd: as LAB_INIT, but the root is the partition whose GPT name
# root=PARTLABEL= gives (the kernel reports it as PARTNAME in sysfs; no udev here), a
# root that cannot be mounted reboots, so that GRUB counts a failed attempt, and the
# watchdog is armed before the slot's own userspace starts.
LAB_INIT_AB = """#!/bin/busybox sh
# n3x lab initrd (A/B): load virtio, mount root=PARTLABEL=..., arm the watchdog, hand over to systemd.
bb=/bin/busybox
$bb mount -t devtmpfs devtmpfs /dev
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
for m in %(modules)s; do $bb insmod /lib/modules/$m.ko; done
label=
for arg in $($bb cat /proc/cmdline); do
  case $arg in root=PARTLABEL=*) label=${arg#root=PARTLABEL=} ;; esac
done
find_partlabel() {
  for u in /sys/class/block/*/uevent; do
    if $bb grep -qx "PARTNAME=$1" "$u"; then
      echo "/dev/$($bb sed -n 's/^DEVNAME=//p' "$u")"
      return 0
    fi
  done
  return 1
}
root=
i=0
while [ $i -lt 200 ]; do
  root=$(find_partlabel "$label") && [ -b "$root" ] && break
  $bb usleep 50000
  i=$((i + 1))
done
if [ -z "$label" ] || ! $bb mount -t ext4 -o rw "$root" /newroot; then
  echo "n3x lab initrd: cannot mount root=PARTLABEL=$label ($root); rebooting"
  $bb sleep 5
  $bb reboot -f
fi
# Open and close without the magic 'V': the watchdog keeps running, and resets the board
# %(watchdog_sec)s s from now unless systemd (RuntimeWatchdogSec) takes it over.
%(watchdog)s
if [ -c /dev/watchdog0 ]; then exec 3>/dev/watchdog0; exec 3>&-; else echo "n3x lab initrd: no watchdog"; fi
$bb ip link set eth0 up && $bb ip addr add 10.0.2.15/24 dev eth0 && $bb ip route add default via 10.0.2.2
$bb umount /sys
$bb umount /proc
$bb mount --move /dev /newroot/dev
exec $bb switch_root /newroot /sbin/init
"""


def confirm_script(defaults=None):
    """n3x-boot-confirm with the health check defaults (AB_CONFIRM_DEFAULTS) filled in."""
    values = {**AB_CONFIRM_DEFAULTS, **(defaults or {})}
    for key, value in values.items():
        if any(char in str(value) for char in "'\\n"):
            raise ImageError(f"boot confirmation {key}: {value!r} holds a quote or newline")
    return AB_BOOT_CONFIRM % {"conf": AB_CONFIRM_CONF, **{key: f"'{value}'" for key, value in values.items()}}


def ab_grub_cfg(cmdline, attempts=AB_BOOT_ATTEMPTS):
    """GRUB's embedded config for the A/B disk: slot choice, boot counting, fallback.

    grubenv (on the ESP, which Linux mounts at /boot/efi; /boot/grub links there) holds
    rootfs_slot, rootfs_fallback, upgrade_available, boot_count and boot_attempts, set by
    swupdate's GRUB handler. While upgrade_available=1 every boot counts; once
    boot_attempts boots (`attempts` when grubenv has none) have not been confirmed
    (n3x-boot-confirm clears upgrade_available), GRUB goes back to rootfs_fallback for good
    and marks the update failed (ustate=3, swupdate's STATE_FAILED). GRUB script has no
    arithmetic, hence the chain of ifs, up to 9 attempts.
    """
    if not 1 <= attempts <= 9:
        raise ImageError("boot attempts must be 1 to 9")
    root_free = " ".join(arg for arg in cmdline.split() if not arg.startswith("root="))
    count = [f'  elif [ "$boot_count" = "{n}" ]; then set boot_count={n + 1}' for n in range(9)]
    slot_parts = AB_SLOT_PARTITIONS
    return "\n".join(
        [
            "# n3x A/B boot (generated): grubenv chooses the slot and counts boot attempts.",
            "set timeout=0",
            "search --no-floppy --set=esp --file /grub/n3x-esp",
            "regexp --set=1:disk '^(.*),[^,]+$' \"$esp\"",
            "set envfile=($esp)/grub/grubenv",
            "load_env --file $envfile",
            'if [ "$upgrade_available" = "1" ]; then',
            f'  if [ -z "$boot_attempts" ]; then set boot_attempts={attempts}; fi',
            '  if [ "$boot_count" = "$boot_attempts" ]; then set fall_back=1',
            *count,
            "  else set fall_back=1",
            "  fi",
            '  if [ "$fall_back" = "1" ]; then',
            '    echo "n3x: slot $rootfs_slot was not confirmed after $boot_count boots: back to slot $rootfs_fallback"',
            "    set rootfs_slot=$rootfs_fallback",
            "    set upgrade_available=0",
            "    set boot_count=0",
            "    set ustate=3",
            "  fi",
            "  save_env --file $envfile rootfs_slot upgrade_available boot_count ustate",
            "fi",
            f'if [ "$rootfs_slot" = "b" ]; then set slot_part=gpt{slot_parts["b"]}; else set rootfs_slot=a; set slot_part=gpt{slot_parts["a"]}; fi',
            'echo "n3x: booting slot $rootfs_slot (upgrade_available=$upgrade_available boot_count=$boot_count)"',
            f"linux ($disk,$slot_part)/boot/vmlinuz root=PARTLABEL=rootfs_$rootfs_slot {root_free} panic=5",
            "initrd ($disk,$slot_part)/boot/initrd-lab.img",
            "boot",
            "# Not bootable (no kernel on the slot): the next boot counts as a failed attempt.",
            'echo "n3x: slot $rootfs_slot cannot be booted; rebooting"',
            "sleep 3",
            "reboot",
            "",
        ]
    )


def grubenv_block(variables):
    """A 1024-byte GRUB environment block (the grubenv file format)."""
    text = "# GRUB Environment Block\n" + "".join(f"{k}={v}\n" for k, v in variables.items())
    if len(text) > 1024:
        raise ImageError("grubenv variables do not fit in 1024 bytes")
    return text.encode() + b"#" * (1024 - len(text))


SECTOR = 512
GPT_ENTRIES = 128
GPT_ENTRY_SIZE = 128
GPT_TABLE_SECTORS = GPT_ENTRIES * GPT_ENTRY_SIZE // SECTOR
GPT_ALIGN = 2048  # 1 MiB


def gpt_layout(partitions, seed):
    """Partition table of a disk: [{name, type, start, sectors, guid}] and the disk size.

    partitions: [(name, type GUID, size in bytes)], placed in order at 1 MiB boundaries.
    GUIDs derive from `seed`, so the same inputs give the same disk.
    """
    placed, lba = [], GPT_ALIGN
    for name, ptype, size in partitions:
        sectors = -(-size // SECTOR)
        sectors += -sectors % GPT_ALIGN
        placed.append({"name": name, "type": ptype, "start": lba, "sectors": sectors, "guid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"n3x:{seed}:{name}"))})
        lba += sectors
    total = lba + GPT_ALIGN  # room for the backup table
    return placed, total


def gpt_headers(placed, total_sectors, seed):
    """{byte offset: bytes} of the protective MBR and both GPT copies."""
    entries = bytearray(GPT_ENTRIES * GPT_ENTRY_SIZE)
    for index, part in enumerate(placed):
        name = part["name"].encode("utf-16-le")
        if len(name) > 72:
            raise ImageError(f"partition name {part['name']!r} is too long for GPT")
        entries[index * GPT_ENTRY_SIZE : (index + 1) * GPT_ENTRY_SIZE] = (
            uuid.UUID(part["type"]).bytes_le
            + uuid.UUID(part["guid"]).bytes_le
            + (part["start"]).to_bytes(8, "little")
            + (part["start"] + part["sectors"] - 1).to_bytes(8, "little")
            + bytes(8)
            + name.ljust(72, b"\0")
        )
    entries = bytes(entries)
    last = total_sectors - 1
    first_usable, last_usable = 2 + GPT_TABLE_SECTORS, last - 1 - GPT_TABLE_SECTORS
    disk_guid = uuid.uuid5(uuid.NAMESPACE_URL, f"n3x:{seed}:disk").bytes_le
    entries_crc = zlib.crc32(entries)

    def header(current, backup, table):
        fields = (
            b"EFI PART" + (0x00010000).to_bytes(4, "little") + (92).to_bytes(4, "little"),
            bytes(8),  # CRC and reserved; the CRC is filled in below
            current.to_bytes(8, "little") + backup.to_bytes(8, "little"),
            first_usable.to_bytes(8, "little") + last_usable.to_bytes(8, "little"),
            disk_guid + table.to_bytes(8, "little"),
            GPT_ENTRIES.to_bytes(4, "little") + GPT_ENTRY_SIZE.to_bytes(4, "little") + entries_crc.to_bytes(4, "little"),
        )
        raw = bytearray(b"".join(fields))
        raw[16:20] = zlib.crc32(bytes(raw)).to_bytes(4, "little")
        return bytes(raw).ljust(SECTOR, b"\0")

    mbr = bytearray(SECTOR)
    mbr[446:462] = bytes([0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF]) + (1).to_bytes(4, "little") + min(last, 0xFFFFFFFF).to_bytes(4, "little")
    mbr[510:512] = b"\x55\xaa"
    return {
        0: bytes(mbr),
        SECTOR: header(1, last, 2),
        2 * SECTOR: entries,
        (last - GPT_TABLE_SECTORS) * SECTOR: entries,
        last * SECTOR: header(last, 1, last - GPT_TABLE_SECTORS),
    }


def copy_sparse(source, dest_handle, offset):
    """Copy a file into an open file at offset, skipping all-zero blocks (dest stays sparse)."""
    with open(source, "rb") as src:
        position = offset
        while chunk := src.read(1024 * 1024):
            if chunk.count(0) != len(chunk):
                dest_handle.seek(position)
                dest_handle.write(chunk)
            position += len(chunk)


def tree_bytes(tree):
    """Bytes the files of a tree take in an ext4 filesystem, roughly (4 KiB blocks, inodes)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            total += 256 + (-(-st.st_size // 4096)) * 4096
    return total


def ab_slot_size(tree, size):
    """Slot size in bytes: `size` as mkfs.ext4 reads it (K/M/G), or 'auto' (content + room)."""
    if size == "auto":
        wanted = int(tree_bytes(tree) * 1.1) + 96 * 1024 * 1024
    else:
        units = {"K": 1024, "M": 1024**2, "G": 1024**3}
        text = str(size).strip().upper()
        try:
            wanted = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
        except ValueError as exc:
            raise ImageError(f"size {size!r} is not a number with K, M or G, nor auto") from exc
    step = 4 * 1024 * 1024
    return -(-wanted // step) * step


class ImageError(Exception):
    """Raised with a message meant for the user."""


class CommandFailed(ImageError):
    """A build step exited with an error (its output is in the build log)."""

    def __init__(self, argv, returncode, log_path):
        super().__init__(f"command failed (exit {returncode}): {' '.join(argv)}; see {log_path}")
        self.program, self.returncode = os.path.basename(argv[0]), returncode


def require_tools(tools):
    """Fail naming the Debian package of each missing host tool."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pkgs = sorted({HOST_TOOLS.get(t, t) for t in missing})
        raise ImageError("missing host tools: {} (install the Debian packages: apt-get install {})".format(", ".join(missing), " ".join(pkgs)))


def flatten_packages(base, groups, selected=None):
    """Base packages plus the selected groups (all when None), sorted and unique."""
    names = set(base)
    for group, pkgs in sorted(groups.items()):
        if selected is None or group in selected:
            names.update(pkgs)
    unknown = sorted(set(selected or []) - set(groups))
    if unknown:
        raise ImageError("unknown package groups: {}".format(", ".join(unknown)))
    return sorted(names)


def overlay_files(ssh_pubkey, hostname="n3x-lab", extra_files=None):
    """Files written into the tree after mmdebstrap: {path: (mode, content)}."""
    files = {
        "/etc/hostname": (0o644, hostname + "\n"),
        "/etc/hosts": (0o644, f"127.0.0.1 localhost\n127.0.1.1 {hostname}\n"),
        "/etc/fstab": (0o644, "LABEL=n3x-root / ext4 defaults,noatime 0 1\n"),
        "/etc/systemd/network/10-eth0-mgmt.network": (0o644, MGMT_NETWORK),
        "/etc/ssh/sshd_config.d/10-n3x-lab.conf": (0o644, SSHD_CONFIG),
        "/etc/systemd/system/n3x-sshd.service": (0o644, SSHD_UNIT),
        "/etc/modprobe.d/n3x-lab.conf": (0o644, LAB_MODPROBE_CONF),
        "/root/.ssh/authorized_keys": (0o600, ssh_pubkey.strip() + "\n"),
        # Empty machine-id: every VM (own overlay) gets its own one at first boot.
        "/etc/machine-id": (0o444, ""),
        # Likewise the iSCSI initiator name: open-iscsi generates a unique one when it finds this.
        "/etc/iscsi/initiatorname.iscsi": (0o600, "GenerateName=yes\n"),
    }
    for path, spec in (extra_files or {}).items():
        check_image_path(path, "extra_files")
        try:
            files[path] = (int(str(spec.get("mode", "0644")), 8), str(spec["content"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ImageError(f"extra_files: {path!r} needs content and an octal mode (like 0644)") from None
    return files


def check_image_path(path, field):
    """An absolute, normalised path inside the image: no '..', no empty or '.' part."""
    plain = isinstance(path, str) and path.startswith("/") and path != "/" and path.isprintable()
    if not plain or os.path.normpath(path) != path or "//" in path or "/../" in f"{path}/":
        raise ImageError(f"{field}: {path!r} is not an absolute path inside the image without '..' (like /etc/n3x/ca.pem)")
    return path


def tree_path(tree, path, max_links=40):
    """Where path is inside tree as the image will see it: symlinks resolved as in a chroot.

    An absolute symlink target starts again at the tree's root and '..' stops there, so no
    link in the tree (Debian's /lib -> usr/lib, or a hostile one) leads out of it.
    """
    parts = [part for part in path.split("/") if part not in ("", ".")]
    resolved = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(tree, *resolved, part)
        if os.path.islink(candidate):
            links += 1
            if links > max_links:
                raise ImageError(f"{path}: too many levels of symbolic links in the image")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    if not resolved:
        raise ImageError(f"{path}: resolves to the image's root directory")
    return os.path.join(tree, *resolved)


def image_spec(
    packages,
    ssh_pubkey,
    suite="bookworm",
    arch="amd64",
    mirror=DEFAULT_MIRROR,
    variant="apt",
    masked_units=None,
    enabled_units=None,
    extra_files=None,
    size="4G",
    uefi_cmdline=None,
    role_version="0",
    hostname="n3x-lab",
    layout="single",
    boot_attempts=AB_BOOT_ATTEMPTS,
    network_variant="",
):
    """Everything that decides the image content, as plain JSON-able data.

    layout "ab" makes the A/B disk (see LAYOUTS); uefi_cmdline is then the kernel command
    line GRUB boots each slot with (its root= is replaced by the slot's). network_variant
    names one of NETWORK_VARIANTS ("" for the plain lab image).
    """
    if layout not in LAYOUTS:
        raise ImageError("layout must be one of {}".format(", ".join(LAYOUTS)))
    if network_variant and network_variant not in NETWORK_VARIANTS:
        raise ImageError("network_variant must be one of {} (or empty)".format(", ".join(sorted(NETWORK_VARIANTS))))
    manager = NETWORK_VARIANTS.get(network_variant, {"packages": [], "files": {}, "unmask": []})
    files = overlay_files(ssh_pubkey, hostname, extra_files)
    files.update(manager["files"])
    ab = layout == "ab"
    uefi = uefi_cmdline is not None and not ab
    if (uefi or ab) and arch != "amd64":
        raise ImageError(f"the lab's UEFI boot (systemd-boot or GRUB for x86-64) is for amd64 images; build the {arch} image without uefi, layout single")
    # systemd-boot's EFI binary is tiny; with it the same image boots both ways.
    # busybox-static is the lab initrd's userland.
    pkgs = sorted(
        set(packages) | {"busybox-static"} | ({"systemd-boot-efi"} if uefi else set()) | (set(AB_PACKAGES) if ab else set()) | set(manager["packages"])
    )
    masked = set(DEFAULT_MASKED_UNITS if masked_units is None else masked_units) - set(manager["unmask"])
    enabled = set(DEFAULT_ENABLED_UNITS if enabled_units is None else enabled_units)
    init = LAB_INIT
    if ab:
        files.update(
            {
                "/etc/fstab": (0o644, AB_FSTAB),
                # swupdate's hardware compatibility check reads "board revision" here.
                "/etc/hwrevision": (0o644, AB_HARDWARE + "\n"),
                "/etc/n3x-build": (0o644, "factory\n"),
                "/usr/local/sbin/n3x-boot-confirm": (0o755, confirm_script()),
                "/etc/systemd/system/n3x-boot-confirm.service": (0o644, AB_BOOT_CONFIRM_UNIT),
                "/etc/systemd/system.conf.d/10-n3x-watchdog.conf": (0o644, AB_WATCHDOG_CONF),
                # Logs in RAM: a slot's filesystem changes only through updates (and the
                # running slot can be remounted read-only to prove an update left it alone).
                "/etc/systemd/journald.conf.d/10-n3x-volatile.conf": (0o644, "[Journal]\nStorage=volatile\n"),
            }
        )
        # Installs run `swupdate -i` one at a time; Debian's daemon would hold its sockets.
        masked |= {"swupdate.service", "swupdate.socket"}
        enabled.add("n3x-boot-confirm.service")
        init = LAB_INIT_AB
    spec = {
        "format": IMAGE_FORMAT,
        "role_version": str(role_version),
        "suite": suite,
        "arch": arch,
        "mirror": mirror,
        "variant": variant,
        "packages": pkgs,
        "dpkg_excludes": list(DEFAULT_DPKG_EXCLUDES),
        "masked_units": sorted(masked),
        "masked_generators": list(DEFAULT_MASKED_GENERATORS),
        "enabled_units": sorted(enabled),
        "files": {p: [f"{m:04o}", c] for p, (m, c) in sorted(files.items())},
        "initramfs_modules": list(DEFAULT_INITRAMFS_MODULES),
        "lab_initrd": {"modules": list(LAB_INITRD_MODULES), "init": init},
        "size": str(size),
        "uefi": uefi,
        "uefi_cmdline": (uefi_cmdline or "") if uefi else "",
    }
    if network_variant:
        # Only variants carry this key: the plain image's cache key stays as it was.
        spec["network_variant"] = network_variant
    if ab:
        # Only A/B images carry these keys: the cache keys of other images stay as they were.
        spec["layout"] = "ab"
        spec["ab"] = {
            "grub_cfg": ab_grub_cfg(uefi_cmdline or "", boot_attempts),
            "grub_modules": list(AB_GRUB_MODULES),
            "esp_mib": AB_ESP_MIB,
            "data_extra_mib": AB_DATA_EXTRA_MIB,
            # Both slots hold root.img: the build adds rootfs_{a,b}_image (its sha256), which
            # a delta update names as its base, and rootfs_{a,b}_version.
            "grubenv": {"rootfs_slot": "a", "rootfs_fallback": "b", "upgrade_available": "0", "boot_count": "0"},
            "version": AB_FACTORY_VERSION,
            # ab_slot_size's rule for size "auto"; change this text when the rule changes.
            "slot_size_rule": "content * 1.1 + 96 MiB, 4 MiB steps",
        }
        spec["lab_initrd"]["watchdog"] = {"seconds": AB_WATCHDOG_SEC, "drivers": dict(AB_WATCHDOG_DRIVERS)}
    return spec


def cache_key(spec):
    """sha256 of the canonical JSON form of the spec."""
    canon = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def mmdebstrap_argv(spec, target):
    """The mmdebstrap command line that installs the spec's packages into target."""
    argv = [
        "mmdebstrap",
        "--mode=root",
        "--variant={}".format(spec["variant"]),
        "--arch={}".format(spec["arch"]),
        "--format=directory",
        '--aptopt=APT::Install-Recommends "false"',
    ]
    for pattern in spec["dpkg_excludes"]:
        argv.append(f"--dpkgopt=path-exclude={pattern}")
    # Keep copyright files: cheap, and license compliance of the image wants them.
    argv.append("--dpkgopt=path-include=/usr/share/doc/*/copyright")
    if spec.get("initramfs_modules"):
        # Written before the kernel is installed, so its initrd is built this way once.
        argv.append('--setup-hook=mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"')
        argv.append('--setup-hook=echo MODULES=list > "$1/etc/initramfs-tools/conf.d/n3x-lab.conf"')
        argv.append("--setup-hook=printf '{}\\n' > \"$1/usr/share/initramfs-tools/modules.d/n3x-lab\"".format("\\n".join(spec["initramfs_modules"])))
    argv.append("--include={}".format(",".join(spec["packages"])))
    argv += [spec["suite"], target, spec["mirror"]]
    return argv


def image_paths(cache_dir, key):
    base = os.path.join(cache_dir, key)
    return {
        "dir": base,
        "root": os.path.join(base, "root.img"),
        "kernel": os.path.join(base, "vmlinuz"),
        "initrd": os.path.join(base, "initrd.img"),
        "lab_initrd": os.path.join(base, "initrd-lab.img"),
        "esp": os.path.join(base, "esp.img"),
        "disk": os.path.join(base, "disk.img"),
        "manifest": os.path.join(base, "manifest.json"),
    }


def lookup(cache_dir, key):
    """Manifest of a complete cached image, or None."""
    paths = image_paths(cache_dir, key)
    try:
        with open(paths["manifest"]) as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        return None
    wanted = ("root", "kernel", "initrd", "lab_initrd") + (("disk",) if manifest.get("spec", {}).get("layout") == "ab" else ())
    for name in wanted:
        if not os.path.isfile(paths[name]):
            return None
    return manifest if manifest.get("key") == key else None


# An image directory's stamp file: its mtime says when a lab last used the image.
LAST_USED_STAMP = "last-used"


def mark_used(cache_dir, key, now=None):
    """Note that a lab uses the image now (prune() keeps images in recent use)."""
    stamp = os.path.join(image_paths(cache_dir, key)["dir"], LAST_USED_STAMP)
    with open(stamp, "a"):
        pass
    os.utime(stamp, None if now is None else (now, now))


def _last_used(image_dir):
    for name in (LAST_USED_STAMP, "manifest.json"):
        with contextlib.suppress(OSError):
            return os.stat(os.path.join(image_dir, name)).st_mtime
    return os.stat(image_dir).st_mtime


def files_in_use(lab_root):
    """Every path the lab VMs' state files under lab_root name (disks, kernels, initrds).

    A VM's state file stays until the VM is removed, so a stopped VM keeps its image too.
    """
    found = set()
    for state_file in glob.glob(os.path.join(lab_root, "*", "*.json")):
        try:
            with open(state_file) as fh:
                state = json.load(fh)
        except (OSError, ValueError):
            continue
        for value in state.values() if isinstance(state, dict) else ():
            found.update(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str))
    return found


_KEY = re.compile(r"[0-9a-f]{64}")


def is_image_dir(image_dir):
    """Whether image_dir is an image n3x built: a real directory named by a hex key, holding
    the manifest build() wrote for that key. Anything else in the cache is never removed."""
    key = os.path.basename(image_dir)
    if not _KEY.fullmatch(key):
        return False
    try:
        if not stat.S_ISDIR(os.lstat(image_dir).st_mode):
            return False
        manifest_path = os.path.join(image_dir, "manifest.json")
        if not stat.S_ISREG(os.lstat(manifest_path).st_mode):
            return False
        with open(manifest_path, "rb") as fh:
            manifest = json.loads(fh.read(MANIFEST_MAX_BYTES))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("key") == key and isinstance(manifest.get("spec"), dict)


# A manifest lists the image's packages: tens of KiB.
MANIFEST_MAX_BYTES = 4 * 1024 * 1024


def prune(cache_dir, keep_days, keep=(), in_use=(), now=None):
    """Remove the cached images no lab used for keep_days days. Returns their keys.

    Never removes an image in `keep` or one whose files a path in `in_use` names
    (files_in_use: a lab VM's backing disk or kernel).
    """
    now = time.time() if now is None else now
    removed = []
    for key in sorted(os.listdir(cache_dir)):
        image_dir = os.path.join(cache_dir, key)
        if key in keep or not is_image_dir(image_dir):
            continue
        if any(path.startswith(image_dir + os.sep) for path in in_use):
            continue
        if now - _last_used(image_dir) < keep_days * 86400:
            continue
        shutil.rmtree(image_dir)
        for leftover in (image_dir + ".lock", os.path.join(cache_dir, key[:12] + ".build.log")):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        removed.append(key)
    return removed


def installed_packages(tree):
    """{package: version} of fully installed packages in an unpacked tree."""
    out = subprocess.run(
        [
            "dpkg-query",
            "--admindir={}".format(os.path.join(tree, "var/lib/dpkg")),
            "-W",
            "-f=${Package}\t${db:Status-Abbrev}\t${Version}\n",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].strip() == "ii":
            found[parts[0].split(":")[0]] = parts[2]
    return found


def verify_packages(installed, groups, base=()):
    """Names of wanted packages (base and every group) missing from installed."""
    missing = {}
    wanted = {"base": list(base)}
    wanted.update(groups)
    for group, pkgs in sorted(wanted.items()):
        gone = sorted(p for p in pkgs if p not in installed)
        if gone:
            missing[group] = gone
    return missing


# Seconds an interrupted build step gets to end by itself (it got the terminal's SIGINT
# too; mmdebstrap then unmounts /proc, /sys and /dev/pts from the tree), then after SIGTERM.
STEP_GRACE_SECONDS = 20


def _run(argv, log):
    log.write("+ {}\n".format(" ".join(argv)))
    log.flush()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        returncode = wait_while_wanted(proc)
    except BaseException as exc:
        # Interrupted: let the step clean up after itself before the tree goes; a SIGKILL
        # right away (subprocess.run's way) would leave its mounts there. A signal reached
        # the step too (same process group); a vanished task did not, so it is told here.
        if isinstance(exc, Interrupted) and exc.signum is None:
            proc.terminate()
        end_process(proc, STEP_GRACE_SECONDS)
        raise
    if returncode != 0:
        raise CommandFailed(argv, returncode, log.name)


def end_process(proc, grace):
    """End a child: wait `grace` seconds, SIGTERM it, wait again, then SIGKILL it."""
    for ending in (None, proc.terminate, proc.kill):
        if ending:
            ending()
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def mount_points_under(path, mountinfo):
    """Mount points at or below path in a /proc/self/mountinfo text, deepest first."""
    root = os.path.realpath(path)
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            # Spaces and other specials are octal escapes (\040) in mountinfo.
            point = fields[4].encode().decode("unicode_escape")
            if point == root or point.startswith(root + os.sep):
                found.append(point)
    return sorted(set(found), key=lambda p: (-p.count(os.sep), p))


def _mountinfo():
    with open("/proc/self/mountinfo") as fh:
        return fh.read()


def remove_build_dir(path):
    """Delete a build directory, unmounting first what a killed mmdebstrap left mounted in
    it (/proc, /sys, /dev/pts of the tree): never delete through a mount."""
    for point in mount_points_under(path, _mountinfo()):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    left = mount_points_under(path, _mountinfo())
    if left:
        raise ImageError("cannot remove {}: still mounted there: {}".format(path, ", ".join(left)))
    shutil.rmtree(path, ignore_errors=True)


BUILD_PREFIX = ".build-"


def stale_builds(cache_dir, building_key):
    """Build directories in cache_dir that no running build owns.

    A build holds its key's lock for as long as its directory (.build-KEY12-*) exists, so a
    directory whose key nobody holds locked is what an interrupted or killed build left.
    building_key is the caller's own key (locked by itself: its old directories are stale).
    """
    stale = []
    for name in sorted(os.listdir(cache_dir)):
        prefix = name[len(BUILD_PREFIX) : len(BUILD_PREFIX) + 12]
        path = os.path.join(cache_dir, name)
        if not name.startswith(BUILD_PREFIX) or not os.path.isdir(path) or os.path.islink(path):
            continue
        if prefix == building_key[:12] or not any(_locked(lock) for lock in glob.glob(os.path.join(cache_dir, glob.escape(prefix) + "*.lock"))):
            stale.append(path)
    return stale


def _locked(lock_path):
    """Whether some process holds the flock on lock_path now."""
    try:
        with open(lock_path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except OSError:
        return False


def _no_space_hint(cache_dir, exc, log_path):
    """An ImageError for a full cache filesystem, or None when space is not the problem."""
    try:
        st = os.statvfs(cache_dir)
    except OSError:
        return None
    mib = st.f_frsize / (1024 * 1024)
    if getattr(exc, "errno", None) == errno.ENOSPC or st.f_bavail * mib < FULL_MIB or _says_no_space(log_path):
        step = f"{exc.program} exited with {exc.returncode}" if isinstance(exc, CommandFailed) else str(exc)
        return ImageError(
            f"no space left in {cache_dir} while building the image (its filesystem holds {st.f_blocks * mib:.0f} MiB "
            f"and had {st.f_bavail * mib:.0f} MiB free then; a lab image build needs about {BUILD_SPACE_GIB} GiB): "
            f"free some space or choose another cache directory (lab_image_cache_dir). Nothing of the build is kept "
            f"but its log, {log_path} ({step})."
        )
    return None


def _says_no_space(log_path):
    """Whether the end of the build log reports ENOSPC (a step may free its files on failure)."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(log_path) - 16384))
            return b"No space left on device" in fh.read()
    except OSError:
        return False


# A build needs room for the unpacked tree and the root filesystem made from it.
BUILD_SPACE_GIB = 3
# Below this much free space a failed build step is taken for a full disk.
FULL_MIB = 16


def customize_tree(tree, spec, log):
    """Write the overlay files and set unit states, without chroot (systemctl --root)."""
    for path, (mode, content) in spec["files"].items():
        dest = tree_path(tree, check_image_path(path, "files"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.dirname(path) == "/root/.ssh":
            os.chmod(os.path.dirname(dest), 0o700)
        # tree_path resolved every link: the file itself is never one.
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(content)
        os.chmod(dest, int(mode, 8))
    if spec["enabled_units"]:
        _run(["systemctl", f"--root={tree}", "enable"] + spec["enabled_units"], log)
    if spec["masked_units"]:
        _run(["systemctl", f"--root={tree}", "mask"] + spec["masked_units"], log)
    # A generator in /etc linked to /dev/null masks the one of the same name in /usr/lib.
    generators = os.path.join(tree, "etc/systemd/system-generators")
    for name in spec.get("masked_generators", []):
        os.makedirs(generators, exist_ok=True)
        link = os.path.join(generators, name)
        if not os.path.lexists(link):
            os.symlink("/dev/null", link)


def _single(tree, pattern):
    found = sorted(glob.glob(os.path.join(tree, pattern)))
    if len(found) != 1:
        raise ImageError(f"expected one {pattern} in the image, found {len(found)}")
    return found[0]


def module_load_order(modules_dep_text, wanted, builtin_text=""):
    """Relative .ko paths to insmod, dependencies first, from a modules.dep text.

    Modules that modules.builtin lists (compiled into the kernel, as virtio is in
    Debian's arm64 kernel) need no insmod and are skipped.
    """
    builtin = {os.path.basename(line.strip())[: -len(".ko")].replace("-", "_") for line in builtin_text.splitlines() if line.strip()}
    deps = {}
    for line in modules_dep_text.splitlines():
        if ":" in line:
            mod, rest = line.split(":", 1)
            deps[os.path.basename(mod)[: -len(".ko")].replace("-", "_")] = (mod, rest.split())
    order = []

    def visit(path):
        name = os.path.basename(path)[: -len(".ko")].replace("-", "_")
        if name not in deps:
            raise ImageError(f"kernel module {name} not found in modules.dep")
        mod, requires = deps[name]
        # modules.dep lists a module's dependencies in reverse load order.
        for dep in reversed(requires):
            visit(dep)
        if mod not in order:
            order.append(mod)

    for name in wanted:
        if name.replace("-", "_") not in builtin:
            visit(name + ".ko")
    return order


def cpio_newc(entries):
    """An uncompressed newc cpio archive from [(name, mode, data_bytes, rdev_major, rdev_minor)]."""
    out = bytearray()

    def pad(buf):
        buf.extend(b"\0" * (-len(buf) % 4))

    for ino, (name, mode, data, major, minor) in enumerate([*list(entries), ("TRAILER!!!", 0, b"", 0, 0)], 1):
        bname = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(bname), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.extend(bname)
        pad(out)
        out.extend(data)
        pad(out)
    return bytes(out)


def watchdog_driver(modules_dep_text, builtin_text, watchdog):
    """(driver, needs insmod) of the first watchdog driver of watchdog['drivers'] the kernel has."""
    builtin = {os.path.basename(line.strip())[: -len(".ko")].replace("-", "_") for line in builtin_text.splitlines() if line.strip()}
    modules = {os.path.basename(line.split(":", 1)[0])[: -len(".ko")].replace("-", "_") for line in modules_dep_text.splitlines() if ":" in line}
    for driver in watchdog["drivers"]:
        if driver in builtin:
            return driver, False
        if driver in modules:
            return driver, True
    raise ImageError("the image's kernel has none of the watchdog drivers {}".format(", ".join(watchdog["drivers"])))


def build_lab_initrd(tree, dest, spec):
    """Write the small lab initrd (see LAB_INIT) for the tree's kernel."""
    kdir = os.path.dirname(_single(tree, "lib/modules/*/modules.dep"))
    builtin = ""
    if os.path.exists(os.path.join(kdir, "modules.builtin")):
        with open(os.path.join(kdir, "modules.builtin")) as fh:
            builtin = fh.read()
    with open(os.path.join(kdir, "modules.dep")) as fh:
        modules_dep = fh.read()
    order = module_load_order(modules_dep, spec["lab_initrd"]["modules"], builtin)
    names = [os.path.basename(m)[: -len(".ko")] for m in order]
    values = {"modules": " ".join(names)}
    watchdog = spec["lab_initrd"].get("watchdog")
    if watchdog:
        driver, load = watchdog_driver(modules_dep, builtin, watchdog)
        extra = [m for m in module_load_order(modules_dep, [driver], builtin) if m not in order] if load else []
        lines = [f"$bb insmod /lib/modules/{os.path.basename(m)}" for m in extra]
        if lines:
            lines[-1] += f" {watchdog['drivers'][driver]}={watchdog['seconds']}"
        values["watchdog"] = "\n".join(lines) or f"# {driver} is built into the kernel"
        values["watchdog_sec"] = watchdog["seconds"]
        order += extra
    with open(os.path.join(tree, "bin/busybox"), "rb") as fh:
        busybox = fh.read()
    entries = [(d, 0o40755, b"", 0, 0) for d in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules")]
    # The kernel opens /dev/console for init before devtmpfs is mounted.
    entries.append(("dev/console", 0o20600, b"", 5, 1))
    entries.append(("bin/busybox", 0o100755, busybox, 0, 0))
    init = spec["lab_initrd"]["init"] % values
    entries.append(("init", 0o100755, init.encode(), 0, 0))
    for mod in order:
        with open(os.path.join(kdir, mod), "rb") as fh:
            entries.append(("lib/modules/" + os.path.basename(mod), 0o100644, fh.read(), 0, 0))
    with open(dest, "wb") as fh:
        fh.write(cpio_newc(entries))


def build_esp(workdir, tree, kernel, initrd, cmdline, log):
    """A FAT UEFI system partition image with systemd-boot, the kernel and the initrd."""
    require_tools(["mkfs.vfat", "mcopy", "mmd"])
    esp = os.path.join(workdir, "esp.img")
    boot_efi = _single(tree, "usr/lib/systemd/boot/efi/systemd-bootx64.efi")
    size_mb = 8 + (os.path.getsize(kernel) + os.path.getsize(initrd)) * 5 // 4 // (1024 * 1024)
    with open(esp, "wb") as fh:
        fh.truncate(size_mb * 1024 * 1024)
    _run(["mkfs.vfat", "-n", "N3X-ESP", esp], log)
    loader = os.path.join(workdir, "tree", "tmp", "loader.conf")
    with open(loader, "w") as fh:
        fh.write("default n3x.conf\ntimeout 0\n")
    entry = os.path.join(workdir, "tree", "tmp", "n3x.conf")
    with open(entry, "w") as fh:
        fh.write(f"title n3x lab\nlinux /vmlinuz\ninitrd /initrd.img\noptions {cmdline}\n")
    env_dirs = ["::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries"]
    _run(["mmd", "-i", esp, *env_dirs], log)
    _run(["mcopy", "-i", esp, boot_efi, "::/EFI/BOOT/BOOTX64.EFI"], log)
    _run(["mcopy", "-i", esp, loader, "::/loader/loader.conf"], log)
    _run(["mcopy", "-i", esp, entry, "::/loader/entries/n3x.conf"], log)
    _run(["mcopy", "-i", esp, kernel, "::/vmlinuz"], log)
    _run(["mcopy", "-i", esp, initrd, "::/initrd.img"], log)
    return esp


def prepare_ab_tree(workdir, tree, spec, lab_initrd, log):
    """Put the slot's boot files in the tree and build the ESP. Returns the ESP image path.

    Each slot carries its own kernel and initrd (/boot/vmlinuz, /boot/initrd-lab.img), so an
    update brings its kernel with it; GRUB reads them from the slot's ext4.
    """
    require_tools(["mkfs.vfat", "mcopy", "mmd", "chroot"])
    boot = os.path.join(tree, "boot")
    kernel = os.path.basename(_single(tree, "boot/vmlinuz-*"))
    link = os.path.join(boot, "vmlinuz")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(kernel, link)
    shutil.copyfile(lab_initrd, os.path.join(boot, "initrd-lab.img"))
    # swupdate's GRUB handler and grub-editenv use /boot/grub/grubenv: it is the ESP's.
    grub_dir = os.path.join(boot, "grub")
    if os.path.islink(grub_dir) or os.path.isfile(grub_dir):
        os.unlink(grub_dir)
    elif os.path.isdir(grub_dir):
        shutil.rmtree(grub_dir)
    os.symlink("efi/grub", grub_dir)
    for directory in ("boot/efi", "data"):
        os.makedirs(os.path.join(tree, directory), exist_ok=True)
    ab = spec["ab"]
    cfg = os.path.join(tree, "tmp", "n3x-grub.cfg")
    with open(cfg, "w") as fh:
        fh.write(ab["grub_cfg"])
    # The image's own GRUB (grub-efi-amd64-bin) builds the EFI binary: no host GRUB needed.
    _run(
        [
            "chroot", tree, "grub-mkstandalone", "--format=x86_64-efi", "--output=/tmp/BOOTX64.EFI",
            "--modules={}".format(" ".join(ab["grub_modules"])), "--install-modules={}".format(" ".join(ab["grub_modules"])),
            "--locales=", "--themes=", "--fonts=", "boot/grub/grub.cfg=/tmp/n3x-grub.cfg",
        ],
        log,
    )  # fmt: skip
    esp = os.path.join(workdir, "esp-ab.img")
    with open(esp, "wb") as fh:
        fh.truncate(ab["esp_mib"] * 1024 * 1024)
    _run(["mkfs.vfat", "-n", "N3X-ESP", esp], log)
    marker = os.path.join(workdir, "n3x-esp")
    with open(marker, "w") as fh:
        fh.write("n3x A/B ESP: GRUB finds its grubenv by this file\n")
    _run(["mmd", "-i", esp, "::/EFI", "::/EFI/BOOT", "::/grub"], log)
    _run(["mcopy", "-i", esp, os.path.join(tree, "tmp", "BOOTX64.EFI"), "::/EFI/BOOT/BOOTX64.EFI"], log)
    _run(["mcopy", "-i", esp, marker, "::/grub/n3x-esp"], log)
    for path in (os.path.join(tree, "tmp", "BOOTX64.EFI"), cfg, marker):
        os.unlink(path)
    return esp


def ab_grubenv(spec, root_sha256):
    """The factory grubenv: slot a runs, both slots hold root.img (its sha256 and version)."""
    variables = dict(spec["ab"]["grubenv"])
    for slot in AB_SLOT_PARTITIONS:
        variables[f"rootfs_{slot}_image"] = root_sha256
        variables[f"rootfs_{slot}_version"] = spec["ab"]["version"]
    return grubenv_block(variables)


def write_ab_grubenv(workdir, esp, spec, root, log):
    """Put the factory grubenv on the ESP, once root.img (whose sha256 it records) exists."""
    digest = hashlib.sha256()
    with open(root, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    env = os.path.join(workdir, "grubenv")
    with open(env, "wb") as fh:
        fh.write(ab_grubenv(spec, digest.hexdigest()))
    _run(["mcopy", "-o", "-i", esp, env, "::/grub/grubenv"], log)
    os.unlink(env)
    return digest.hexdigest()


def build_ab_disk(workdir, root, esp, spec, seed, log):
    """disk.img: GPT with esp, rootfs_a and rootfs_b (both root.img) and data (empty ext4)."""
    slot = os.path.getsize(root)
    data = os.path.join(workdir, "data.img")
    data_size = 2 * slot + spec["ab"]["data_extra_mib"] * 1024 * 1024
    _run(["mkfs.ext4", "-q", "-F", "-L", "n3x-data", data, str(data_size // 1024) + "K"], log)
    images = [("esp", GPT_ESP, esp), ("rootfs_a", GPT_LINUX, root), ("rootfs_b", GPT_LINUX, root), ("data", GPT_LINUX, data)]
    placed, total = gpt_layout([(name, ptype, os.path.getsize(path)) for name, ptype, path in images], seed)
    disk = os.path.join(workdir, "disk.img")
    with open(disk, "wb") as out:
        out.truncate(total * SECTOR)
        for part, (_name, _ptype, path) in zip(placed, images, strict=True):
            copy_sparse(path, out, part["start"] * SECTOR)
        for offset, blob in gpt_headers(placed, total, seed).items():
            out.seek(offset)
            out.write(blob)
    for path in (esp, data):
        os.unlink(path)
    return disk


def host_arch():
    return HOST_ARCH


# qemu-user binary names (binfmt_misc entries) per Debian architecture.
BINFMT_NAMES = {"amd64": "qemu-x86_64", "arm64": "qemu-aarch64", "armhf": "qemu-arm", "riscv64": "qemu-riscv64"}


def check_foreign_arch(arch, binfmt_dir="/proc/sys/fs/binfmt_misc"):
    """Fail clearly when an image of another architecture cannot be built on this host.

    mmdebstrap runs the guest's maintainer scripts, which needs qemu-user-static
    registered with binfmt_misc.
    """
    if arch == host_arch():
        return
    entry = os.path.join(binfmt_dir, BINFMT_NAMES.get(arch, "qemu-" + arch))
    if not binfmt_enabled(os.path.basename(entry), binfmt_dir):
        raise ImageError(
            f"building an {arch} image on this {host_arch()} host needs {os.path.basename(entry)} in binfmt_misc: "
            "apt-get install qemu-user-static binfmt-support, then (as root) "
            "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable "
            "(scripts/bootstrap does this)"
        )


def build(cache_dir, spec, groups, base_packages=(), force=False):
    """Build (or reuse) the image for spec. Returns (manifest, built: bool)."""
    key = cache_key(spec)
    os.makedirs(cache_dir, exist_ok=True)
    if not force:
        found = lookup(cache_dir, key)
        if found:
            return found, False
    require_tools(["mmdebstrap", "mkfs.ext4", "dpkg-query", "systemctl"])
    check_foreign_arch(spec["arch"])
    if os.geteuid() != 0:
        raise ImageError("building a lab image needs root (mmdebstrap --mode=root, device nodes)")
    lock_path = os.path.join(cache_dir, key + ".lock")
    with interrupts_raise(), open(lock_path, "w") as lock:
        # Another build of the same key (parallel run) finishes first; then reuse it.
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = None if force else lookup(cache_dir, key)
        if found:
            return found, False
        for leftover in stale_builds(cache_dir, key):
            remove_build_dir(leftover)
        log_path = os.path.join(cache_dir, key[:12] + ".build.log")
        workdir = tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{key[:12]}-", dir=cache_dir)
        try:
            manifest = _build_in(workdir, log_path, spec, groups, base_packages, key)
            check_still_wanted()
            _commit(workdir, image_paths(cache_dir, key)["dir"], key)
            os.unlink(log_path)
            return manifest, True
        except (ImageError, OSError) as exc:
            full = _no_space_hint(cache_dir, exc, log_path)
            if full:
                raise full from exc
            if isinstance(exc, ImageError):
                raise
            raise ImageError(f"building the image in {cache_dir} failed: {exc}") from exc
        except BaseException:
            # Interrupted: the log of a build that did not finish says nothing the next one will not.
            with contextlib.suppress(OSError):
                os.unlink(log_path)
            raise
        finally:
            if os.path.isdir(workdir):
                remove_build_dir(workdir)


def _build_in(workdir, log_path, spec, groups, base_packages, key):
    """Build the image's files in workdir (manifest.json last). Returns the manifest."""
    started = time.time()
    with open(log_path, "w") as log:
        tree = os.path.join(workdir, "tree")
        _run(mmdebstrap_argv(spec, tree), log)
        installed = installed_packages(tree)
        missing = verify_packages(installed, groups, base_packages)
        if missing:
            raise ImageError("packages missing from the image: " + "; ".join("{}: {}".format(g, ", ".join(p)) for g, p in missing.items()))
        customize_tree(tree, spec, log)
        kernel = os.path.join(workdir, "vmlinuz")
        initrd = os.path.join(workdir, "initrd.img")
        shutil.copyfile(_single(tree, "boot/vmlinuz-*"), kernel)
        shutil.copyfile(_single(tree, "boot/initrd.img-*"), initrd)
        lab_initrd = os.path.join(workdir, "initrd-lab.img")
        build_lab_initrd(tree, lab_initrd, spec)
        if spec["uefi"]:
            build_esp(workdir, tree, kernel, lab_initrd, spec["uefi_cmdline"], log)
        root = os.path.join(workdir, "root.img")
        size = spec["size"]
        if spec.get("layout") == "ab":
            esp = prepare_ab_tree(workdir, tree, spec, lab_initrd, log)
            # In KiB: mkfs.ext4 reads a bare number as a count of blocks.
            size = f"{ab_slot_size(tree, size) // 1024}K"
        # -d copies the tree into the new filesystem: no loop device, no mount.
        _run(["mkfs.ext4", "-q", "-F", "-L", "n3x-root", "-d", tree, root, size], log)
        remove_build_dir(tree)
        if spec.get("layout") == "ab":
            write_ab_grubenv(workdir, esp, spec, root, log)
            build_ab_disk(workdir, root, esp, spec, key, log)
    manifest = {
        "key": key,
        "spec": spec,
        "packages": installed,
        "build_seconds": round(time.time() - started, 1),
        "built_at": int(time.time()),
    }
    with open(os.path.join(workdir, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
    return manifest


def _commit(workdir, final, key):
    """Put the finished image in place with renames only: lookup() sees the old image or
    the new one, never a mix. A replaced image (force) is moved aside first, then deleted."""
    if os.path.isdir(final):
        aside = tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{key[:12]}-old-", dir=os.path.dirname(final))
        os.rename(final, aside)
        os.rename(workdir, final)
        remove_build_dir(aside)
    else:
        os.rename(workdir, final)
