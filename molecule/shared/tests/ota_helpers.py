"""Helpers of the OTA scenarios (swupdate-ab-ota, ota-rollout): images, bundles, installs,
reboots, and the phase timings they record.

Every image a test writes to a slot is derived from the lab's A/B image with debugfs under
E2FSPROGS_FAKE_TIME, so the same test makes the same bytes on every run, and the bundles'
compressed and chunked artifacts are reused from ARTIFACTS (content-addressed).
"""

import json
import os
import pathlib
import shlex
import shutil
import socket
import subprocess
import sys
import time
from typing import ClassVar

REPO = pathlib.Path(__file__).resolve().parents[3]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_swupdate as swu  # noqa: E402
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_update_server import UpdateServer  # noqa: E402,F401

HARDWARE = "n3x-lab:1.0"
GRUBENV = "/boot/grub/grubenv"
SLOT_DEVICE = "/dev/disk/by-partlabel/rootfs_{}"
# The data partition has room for a pushed bundle (the slots have little free space).
REMOTE_BUNDLE = "/data/test.swu"
# QEMU user-mode networking: the guest reaches the host's loopback at 10.0.2.2.
HOST_FROM_GUEST = "10.0.2.2"
# The scenarios' signing and AES keys (create.yml: n3x.cluster.swupdate_keys), kept across
# runs like a fleet's: the A/B image carries the certificate, so new keys would rebuild it.
LAB_KEYS = pathlib.Path(os.path.expanduser("~/.local/share/n3x/lab-swupdate-keys"))
ARTIFACTS = pathlib.Path(os.path.expanduser("~/.cache/n3x/swupdate-artifacts"))
TIMINGS = pathlib.Path(os.path.expanduser("~/.cache/n3x/bench"))
FAKE_TIME = "1704067200"  # 2024-01-01: debugfs edits give the same bytes on every run


def scenario():
    return os.environ.get("MOLECULE_SCENARIO_NAME", "swupdate-ab-ota")


def lab_dir():
    return pathlib.Path(os.path.expanduser(f"~/.cache/n3x/lab/molecule-{scenario()}"))


def vm_state(name):
    """The lab VM's recorded state (lab_vm's NAME.json): its disk image, SSH port..."""
    return json.loads((lab_dir() / f"{name}.json").read_text())


def lab_images():
    """The images create.yml built: {'base': dir, 'update': dir (base plus one package)}."""
    path = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ota-images.json"
    return {k: pathlib.Path(v) for k, v in json.loads(path.read_text()).items()}


def keys():
    key, cert, aes = LAB_KEYS / "swupdate.key", LAB_KEYS / "swupdate.crt", LAB_KEYS / "aes.key"
    missing = [path.name for path in (key, cert, aes) if not path.is_file()]
    assert not missing, f"no {', '.join(missing)} in {LAB_KEYS}: create.yml (n3x.cluster.swupdate_keys) makes them"
    return str(key), str(cert), str(aes)


class Phases:
    """Wall time of each phase of a scenario, written to ~/.cache/n3x/bench/ota-phases-SCENARIO.json.

    One record per test run (the data is shared by every instance in the process).
    """

    data: ClassVar[dict] = {}

    def __init__(self):
        self.path = TIMINGS / f"ota-phases-{scenario()}.json"

    def record(self, name, seconds, **extra):
        self.data[name] = {"seconds": round(seconds, 1), **extra}
        TIMINGS.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1) + "\n")

    def timed(self, name, function, *args, **kwargs):
        started = time.time()
        result = function(*args, **kwargs)
        self.record(name, time.time() - started)
        return result


def _debugfs(image, *commands):
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": FAKE_TIME}
    for command in commands:
        result = subprocess.run(["debugfs", "-w", "-R", command, str(image)], capture_output=True, text=True, env=env, check=False)
        assert "error" not in result.stderr.lower() or "not found" in result.stderr, result.stderr


def derived_rootfs(source, dest, marker, mask=()):
    """A copy of a slot image whose /etc/n3x-build says `marker`, with `mask`ed systemd units."""
    if dest.exists():
        return dest
    temporary = dest.with_suffix(".tmp")
    subprocess.run(["cp", "--sparse=always", str(source), str(temporary)], check=True)
    text = dest.parent / f"{dest.name}.marker"
    text.write_text(marker + "\n")
    _debugfs(temporary, "rm /etc/n3x-build", f"write {text} /etc/n3x-build")
    for unit in mask:
        _debugfs(temporary, f"symlink /etc/systemd/system/{unit} /dev/null")
    temporary.rename(dest)
    return dest


def hanging_rootfs(image_dir, dest):
    """A slot that boots its kernel and initrd, whose userspace then hangs (an init that never
    starts anything): only the watchdog the initrd armed gets the board out of it."""
    tree = dest.parent / f"{dest.name}.tree"
    shutil.rmtree(tree, ignore_errors=True)
    for directory in ("boot", "bin", "sbin", "dev", "proc", "sys"):
        (tree / directory).mkdir(parents=True)
    shutil.copyfile(image_dir / "vmlinuz", tree / "boot" / "vmlinuz")
    shutil.copyfile(image_dir / "initrd-lab.img", tree / "boot" / "initrd-lab.img")
    subprocess.run(["debugfs", "-R", f"dump /usr/bin/busybox {tree / 'bin' / 'busybox'}", str(image_dir / "root.img")], check=True, capture_output=True)
    (tree / "bin" / "busybox").chmod(0o755)
    init = tree / "sbin" / "init"
    init.write_text("#!/bin/busybox sh\necho 'n3x test: this slot hangs in userspace' > /dev/console\nwhile :; do /bin/busybox sleep 3600; done\n")
    init.chmod(0o755)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "n3x-root", "-d", str(tree), str(dest), "32M"], check=True)
    shutil.rmtree(tree)
    return dest


def bundle(dest, image, version, key, cert, hardware=HARDWARE, **options):
    """A bundle as the fleet builds it: zstd-compressed, preserving the node's identity."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    options = {"compression": "zstd", "work_dir": str(ARTIFACTS), "preserve": swu.DEFAULT_PRESERVE, "boot_attempts": 3} | options
    images = [{"path": str(image), "name": "rootfs.ext4", **options.pop("image_options", {})}]
    return swu.build_bundle(str(dest), version, [hardware], images, key=key, cert=cert, **options)


def ansible(host, module, args, check=False):
    """Run a module on the host; the result dict also when the module fails.

    The result has no 'failed' key when it comes through `ansible --tree` (what testinfra
    reads), so callers judge it by the module's own return values.
    """
    from testinfra.modules.ansible import AnsibleException

    try:
        return host.ansible(module, args, check=check)
    except AnsibleException as exc:
        return exc.result


def push(host, local, remote=REMOTE_BUNDLE):
    result = ansible(host, "ansible.builtin.copy", f"src={local} dest={remote} mode=0600")
    assert result.get("dest") == remote, result
    assert "msg" not in result, result
    return remote


def install(host, **args):
    """n3x.cluster.swupdate_install on the host (it retries swupdate's start-up race)."""
    return ansible(host, "n3x.cluster.swupdate_install", " ".join(f"{k}={shlex.quote(str(v))}" for k, v in args.items()))


def grubenv(host):
    result = host.run(f"grub-editenv {GRUBENV} list")
    assert result.rc == 0, result.stderr
    return swu.parse_grubenv(result.stdout)


def running_slot(host):
    return swu.running_slot(host.file("/proc/cmdline").content_string)


def sectors_written(host):
    """{slot: sectors the kernel has written to that partition since boot} (/sys/class/block/*/stat)."""
    script = " ".join(f"$(cut -c1-200 /sys/class/block/$(basename $(readlink -f {SLOT_DEVICE.format(s)}))/stat)" for s in swu.SLOTS)
    result = host.run(f"echo {script}")
    assert result.rc == 0, result.stderr
    fields = result.stdout.split()
    # Each stat line has 17 fields; the 7th is sectors written.
    return {slot: int(fields[17 * index + 6]) for index, slot in enumerate(swu.SLOTS)}


def _ssh_answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def reboot(host, timeout=600):
    """Reboot and wait until the boot is decided: a new boot id, and n3x-boot-confirm has
    confirmed the new slot or had nothing to confirm (after a rollback, on the old slot).

    playbooks/ota.yml does the same with ansible.builtin.reboot; this polls every second
    (the module backs off up to 12 s between tries), which saves seconds per reboot here.
    """
    port = vm_state(host.backend.get_hostname())["ssh_port"]
    before = host.file("/proc/sys/kernel/random/boot_id").content_string.strip()
    host.run("systemctl --no-block reboot")
    started = time.time()
    while time.time() - started < timeout:
        time.sleep(1)
        if not _ssh_answers(port):
            continue
        state = host.run("cat /proc/sys/kernel/random/boot_id; systemctl is-active n3x-boot-confirm.service")
        lines = state.stdout.split()
        if len(lines) == 2 and lines[0] != before and lines[1] == "active":
            return time.time() - started
    raise AssertionError(f"no decided boot within {timeout} s")


def confirm_log(host):
    return host.run("journalctl -b -u n3x-boot-confirm.service -o cat --no-pager").stdout


def identity(host):
    """What makes the node itself: name, machine id, SSH host key, its config files."""
    return {
        "hostname": host.run("hostname").stdout.strip(),
        "etc_hostname": host.file("/etc/hostname").content_string.strip(),
        "machine_id": host.file("/etc/machine-id").content_string.strip(),
        "ssh_host_key": host.run("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1],
        "boot_confirm_conf": host.file("/etc/n3x/boot-confirm.conf").content_string if host.file("/etc/n3x/boot-confirm.conf").exists else None,
        "aes_key_mode": host.file("/etc/swupdate/aes.key").mode if host.file("/etc/swupdate/aes.key").exists else None,
    }
