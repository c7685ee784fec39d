"""Helpers of the SWUpdate A/B scenario: the lab VM's files, bundles, installs, reboots."""

import functools
import hashlib
import http.server
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[3]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_swupdate as swu  # noqa: E402

HARDWARE = "n3x-lab:1.0"
GRUBENV = "/boot/grub/grubenv"
SLOT_DEVICE = "/dev/disk/by-partlabel/rootfs_{}"
# The data partition has room for a pushed bundle (the slots have little free space).
REMOTE_BUNDLE = "/data/test.swu"
# QEMU user-mode networking: the guest reaches the host's loopback at 10.0.2.2.
HOST_FROM_GUEST = "10.0.2.2"


def lab_dir():
    scenario = os.environ.get("MOLECULE_SCENARIO_NAME", "swupdate-ab-ota")
    return pathlib.Path(os.path.expanduser(f"~/.cache/n3x/lab/molecule-{scenario}"))


def vm_state(name):
    """The lab VM's recorded state (lab_vm's NAME.json): its disk image, SSH port..."""
    return json.loads((lab_dir() / f"{name}.json").read_text())


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def rootfs_with_marker(source, dest, marker):
    """A copy of the image's slot filesystem whose /etc/n3x-build says `marker` (debugfs: no mount)."""
    subprocess.run(["cp", "--sparse=always", str(source), str(dest)], check=True)
    text = dest.parent / f"{dest.name}.marker"
    text.write_text(marker + "\n")
    for command in ("rm /etc/n3x-build", f"write {text} /etc/n3x-build"):
        subprocess.run(["debugfs", "-w", "-R", command, str(dest)], check=True, capture_output=True)
    return dest


def broken_rootfs(image_dir, dest):
    """A slot filesystem that boots a kernel but has no /sbin/init: the kernel panics."""
    tree = dest.parent / f"{dest.name}.tree"
    (tree / "boot").mkdir(parents=True)
    shutil.copyfile(image_dir / "vmlinuz", tree / "boot" / "vmlinuz")
    shutil.copyfile(image_dir / "initrd-lab.img", tree / "boot" / "initrd-lab.img")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "n3x-root", "-d", str(tree), str(dest), "65536K"], check=True)
    return dest


def bundle(dest, rootfs, version, key, cert, hardware=HARDWARE):
    swu.build_bundle(str(dest), version, [hardware], [{"path": str(rootfs), "name": "rootfs.ext4"}], key=key, cert=cert)
    return dest


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
    return ansible(host, "n3x.cluster.swupdate_install", " ".join(f"{k}={v}" for k, v in args.items()))


def grubenv(host):
    result = host.run(f"grub-editenv {GRUBENV} list")
    assert result.rc == 0, result.stderr
    return swu.parse_grubenv(result.stdout)


def running_slot(host):
    return swu.running_slot(host.file("/proc/cmdline").content_string)


def slot_digests(host):
    """{slot: sha256 of the whole partition}."""
    result = host.run("sha256sum " + " ".join(SLOT_DEVICE.format(s) for s in swu.SLOTS))
    assert result.rc == 0, result.stderr
    return {slot: line.split()[0] for slot, line in zip(swu.SLOTS, result.stdout.splitlines(), strict=True)}


def reboot(host, timeout=900):
    """Reboot and wait until SSH answers again with a new boot id (ansible.builtin.reboot)."""
    # systemctl reboot: the lab image masks logind, which `shutdown -r` needs to schedule.
    result = ansible(host, "ansible.builtin.reboot", f"reboot_timeout={timeout} reboot_command='systemctl reboot'")
    assert result.get("rebooted") is True, result
    return result


def wait_confirmed(host, timeout=180):
    """Wait until n3x-boot-confirm.service has run; returns grubenv."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = host.run("systemctl is-active n3x-boot-confirm.service").stdout.strip()
        if state in ("active", "failed"):
            assert state == "active", host.run("journalctl -b -u n3x-boot-confirm.service --no-pager").stdout
            return grubenv(host)
        time.sleep(2)
    raise AssertionError("n3x-boot-confirm.service did not run")


class BundleServer:
    """The lab's update server: HTTP on the controller's loopback, seen by the guest at 10.0.2.2."""

    def __init__(self, directory):
        self.requests = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, fmt, *args):
                server.requests.append(fmt % args)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name):
        return f"http://{HOST_FROM_GUEST}:{self.httpd.server_address[1]}/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
