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

import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time

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
]

DEFAULT_ENABLED_UNITS = ["systemd-networkd.service", "n3x-sshd.service"]

# A small initrd (only what a virtio lab VM needs to mount its root) unpacks much faster
# under TCG than initramfs-tools' default MODULES=most.
DEFAULT_INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "ext4", "crc32c_generic"]

# The lab initrd (initrd-lab.img): busybox, the virtio modules and a short /init that
# mounts /dev/vda, sets up eth0 and switches to the root. Without udev it is ~5 s faster
# under TCG than the initramfs-tools one (which stays in the image as initrd.img). Loading
# virtio_net here also names the NICs eth0, eth1... strictly in PCI slot order.
LAB_INITRD_MODULES = ["virtio_pci", "virtio_blk", "virtio_net"]
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


class ImageError(Exception):
    """Raised with a message meant for the user."""


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
        "/root/.ssh/authorized_keys": (0o600, ssh_pubkey.strip() + "\n"),
        # Empty machine-id: every VM (own overlay) gets its own one at first boot.
        "/etc/machine-id": (0o444, ""),
        # Likewise the iSCSI initiator name: open-iscsi generates a unique one when it finds this.
        "/etc/iscsi/initiatorname.iscsi": (0o600, "GenerateName=yes\n"),
    }
    for path, spec in (extra_files or {}).items():
        files[path] = (int(spec.get("mode", "0644"), 8), spec["content"])
    return files


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
):
    """Everything that decides the image content, as plain JSON-able data."""
    files = overlay_files(ssh_pubkey, hostname, extra_files)
    uefi = uefi_cmdline is not None
    # systemd-boot's EFI binary is tiny; with it the same image boots both ways.
    # busybox-static is the lab initrd's userland.
    pkgs = sorted(set(packages) | {"busybox-static"} | ({"systemd-boot-efi"} if uefi else set()))
    return {
        "format": IMAGE_FORMAT,
        "role_version": str(role_version),
        "suite": suite,
        "arch": arch,
        "mirror": mirror,
        "variant": variant,
        "packages": pkgs,
        "dpkg_excludes": list(DEFAULT_DPKG_EXCLUDES),
        "masked_units": sorted(set(DEFAULT_MASKED_UNITS if masked_units is None else masked_units)),
        "enabled_units": sorted(set(DEFAULT_ENABLED_UNITS if enabled_units is None else enabled_units)),
        "files": {p: [f"{m:04o}", c] for p, (m, c) in sorted(files.items())},
        "initramfs_modules": list(DEFAULT_INITRAMFS_MODULES),
        "lab_initrd": {"modules": list(LAB_INITRD_MODULES), "init": LAB_INIT},
        "size": str(size),
        "uefi": uefi,
        "uefi_cmdline": uefi_cmdline or "",
    }


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
    for name in ("root", "kernel", "initrd", "lab_initrd"):
        if not os.path.isfile(paths[name]):
            return None
    return manifest if manifest.get("key") == key else None


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


def _run(argv, log):
    log.write("+ {}\n".format(" ".join(argv)))
    log.flush()
    proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise ImageError(f"command failed (exit {proc.returncode}): {' '.join(argv)}; see {log.name}")


def customize_tree(tree, spec, log):
    """Write the overlay files and set unit states, without chroot (systemctl --root)."""
    for path, (mode, content) in spec["files"].items():
        dest = os.path.join(tree, path.lstrip("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.dirname(path) == "/root/.ssh":
            os.chmod(os.path.dirname(dest), 0o700)
        with open(dest, "w") as fh:
            fh.write(content)
        os.chmod(dest, int(mode, 8))
    if spec["enabled_units"]:
        _run(["systemctl", f"--root={tree}", "enable"] + spec["enabled_units"], log)
    if spec["masked_units"]:
        _run(["systemctl", f"--root={tree}", "mask"] + spec["masked_units"], log)


def _single(tree, pattern):
    found = sorted(glob.glob(os.path.join(tree, pattern)))
    if len(found) != 1:
        raise ImageError(f"expected one {pattern} in the image, found {len(found)}")
    return found[0]


def module_load_order(modules_dep_text, wanted):
    """Relative .ko paths to insmod, dependencies first, from a modules.dep text."""
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


def build_lab_initrd(tree, dest, spec):
    """Write the small lab initrd (see LAB_INIT) for the tree's kernel."""
    kdir = os.path.dirname(_single(tree, "lib/modules/*/modules.dep"))
    with open(os.path.join(kdir, "modules.dep")) as fh:
        order = module_load_order(fh.read(), spec["lab_initrd"]["modules"])
    names = [os.path.basename(m)[: -len(".ko")] for m in order]
    with open(os.path.join(tree, "bin/busybox"), "rb") as fh:
        busybox = fh.read()
    entries = [(d, 0o40755, b"", 0, 0) for d in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules")]
    # The kernel opens /dev/console for init before devtmpfs is mounted.
    entries.append(("dev/console", 0o20600, b"", 5, 1))
    entries.append(("bin/busybox", 0o100755, busybox, 0, 0))
    init = spec["lab_initrd"]["init"] % {"modules": " ".join(names)}
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


def build(cache_dir, spec, groups, base_packages=(), force=False):
    """Build (or reuse) the image for spec. Returns (manifest, built: bool)."""
    key = cache_key(spec)
    os.makedirs(cache_dir, exist_ok=True)
    if not force:
        found = lookup(cache_dir, key)
        if found:
            return found, False
    require_tools(["mmdebstrap", "mkfs.ext4", "dpkg-query", "systemctl"])
    if os.geteuid() != 0:
        raise ImageError("building a lab image needs root (mmdebstrap --mode=root, device nodes)")
    lock_path = os.path.join(cache_dir, key + ".lock")
    with open(lock_path, "w") as lock:
        # Another build of the same key (parallel run) finishes first; then reuse it.
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = None if force else lookup(cache_dir, key)
        if found:
            return found, False
        started = time.time()
        workdir = tempfile.mkdtemp(prefix=f".build-{key[:12]}-", dir=cache_dir)
        log_path = os.path.join(cache_dir, key[:12] + ".build.log")
        try:
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
                # -d copies the tree into the new filesystem: no loop device, no mount.
                _run(["mkfs.ext4", "-q", "-F", "-L", "n3x-root", "-d", tree, root, spec["size"]], log)
                shutil.rmtree(tree)
            manifest = {
                "key": key,
                "spec": spec,
                "packages": installed,
                "build_seconds": round(time.time() - started, 1),
                "built_at": int(time.time()),
            }
            with open(os.path.join(workdir, "manifest.json"), "w") as fh:
                json.dump(manifest, fh, indent=1, sort_keys=True)
            final = image_paths(cache_dir, key)["dir"]
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.rename(workdir, final)
            os.unlink(log_path)
            return manifest, True
        finally:
            if os.path.isdir(workdir):
                shutil.rmtree(workdir, ignore_errors=True)
