"""SWUpdate A/B OTA on a lab VM booted by OVMF and GRUB (the original's debian-swupdate-* tests, plus rollback).

The tests run in file order against one VM, each starting from the state the previous one
left (which slot runs), so the scenario boots the VM as few times as possible:
bundle validation (slot a runs) -> apply (b written) -> boot switch (b runs) -> network OTA
(a written over HTTP, a runs again: the switch back) -> playbooks/ota.yml (b runs) ->
rollback (a written with an image that cannot come up; GRUB returns to b) -> ota.yml
stopping when its node rolls back.
"""

import os
import pathlib
import subprocess
import sys

import pytest
from ota_helpers import (
    GRUBENV,
    REMOTE_BUNDLE,
    SLOT_DEVICE,
    BundleServer,
    broken_rootfs,
    bundle,
    grubenv,
    install,
    push,
    reboot,
    rootfs_with_marker,
    running_slot,
    sha256_file,
    slot_digests,
    swu,
    vm_state,
    wait_confirmed,
)

REPO = pathlib.Path(__file__).resolve().parents[3]
BIN = pathlib.Path(sys.executable).parent
KEYS = pathlib.Path(os.path.expanduser("~/.cache/n3x/swupdate-keys"))


@pytest.fixture(scope="module")
def node(host):
    return host.backend.get_hostname()


@pytest.fixture(scope="module")
def image_dir(node):
    # lab_vm records the disk it booted (disk.img of the A/B image); root.img is the slot filesystem.
    return pathlib.Path(vm_state(node)["root"]).parent


@pytest.fixture(scope="module")
def serial_log(node):
    return pathlib.Path(vm_state(node)["argv"][vm_state(node)["argv"].index("-serial") + 1].removeprefix("file:"))


@pytest.fixture(scope="module")
def keys():
    key, cert = KEYS / "swupdate.key", KEYS / "swupdate.crt"
    if not (key.is_file() and cert.is_file()):
        pytest.fail(f"no signing key in {KEYS}: converge (role n3x.cluster.swupdate_keys) makes it")
    return str(key), str(cert)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("ota")


@pytest.fixture(scope="module")
def update_rootfs(image_dir, work):
    return rootfs_with_marker(image_dir / "root.img", work / "rootfs-2.0.0.ext4", "update-2.0.0")


@pytest.fixture(scope="module")
def update_bundle(update_rootfs, keys, work):
    return bundle(work / "update-2.0.0.swu", update_rootfs, "2.0.0", *keys)


@pytest.fixture(scope="module")
def network_rootfs(image_dir, work):
    return rootfs_with_marker(image_dir / "root.img", work / "rootfs-3.0.0.ext4", "update-3.0.0")


@pytest.fixture(scope="module")
def network_bundle(network_rootfs, keys, work):
    return bundle(work / "update-3.0.0.swu", network_rootfs, "3.0.0", *keys)


@pytest.fixture(scope="module")
def broken_bundle(image_dir, keys, work):
    return bundle(work / "broken-9.0.0.swu", broken_rootfs(image_dir, work / "rootfs-broken.ext4"), "9.0.0", *keys)


# --- rejected bundles: a small image is enough, swupdate refuses them before writing --------


@pytest.fixture(scope="module")
def rejected(keys, work):
    payload = work / "small.ext4"
    payload.write_bytes(os.urandom(4 * 1024 * 1024))
    other_key, other_cert = str(work / "other.key"), str(work / "other.crt")
    swu.generate_signing_key(other_key, other_cert, common_name="somebody else", bits=2048)
    good = bundle(work / "small-good.swu", payload, "1.0.1", *keys)
    data = bytearray(good.read_bytes())
    header, start, size = swu.member_span(data, "rootfs.ext4")
    data[start + 4096] ^= 0xFF
    # The cpio checksum is fixed too: only the signed sha256 can catch the change.
    data[header + 102 : header + 110] = b"%08X" % (sum(data[start : start + size]) & 0xFFFFFFFF)
    altered = work / "small-altered.swu"
    altered.write_bytes(bytes(data))
    return {
        "unsigned": (bundle(work / "small-unsigned.swu", payload, "1.0.1", None, None), "description file name not the first of the list"),
        "altered image": (altered, "HASH mismatch"),
        "other key": (bundle(work / "small-other-key.swu", payload, "1.0.1", other_key, other_cert), "Authentication of all signatures failed"),
        "other hardware revision": (bundle(work / "small-rev.swu", payload, "1.0.1", *keys, hardware="n3x-lab:2.0"), "SW not compatible with hardware"),
        "other board": (bundle(work / "small-board.swu", payload, "1.0.1", *keys, hardware="jetson-orin:1.0"), "HW compatibility not found"),
    }


@pytest.fixture(scope="module")
def factory_digests(host, image_dir, read_only_root):
    """Both slots before any bundle is tried: b is the image's root.img, a is the running one."""
    digests = slot_digests(host)
    assert digests["b"] == sha256_file(image_dir / "root.img")
    return digests


@pytest.fixture(scope="module")
def read_only_root(host):
    """The running slot's filesystem read-only (journald keeps logs in RAM, Ansible its files
    in /run): nothing but a raw write to the partition can change it, and the tests below
    prove swupdate makes none. The next reboot mounts it read-write again."""
    # Python (Ansible's modules) needs a writable temporary directory.
    result = host.run("mount -t tmpfs -o mode=1777,size=64m n3x-tmp /tmp && mount -o remount,ro /")
    assert result.rc == 0, result.stderr
    yield
    host.run("mount -o remount,rw / ; umount /tmp")


def run_ota(host, bundle_path):
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    argv = [str(BIN / "ansible-playbook"), "-i", host.backend.ansible_inventory, "playbooks/ota.yml", "-e", f"bundle={bundle_path}"]
    argv += ["-l", host.backend.get_hostname()]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)


# --- the image -------------------------------------------------------------------------


def test_ab_disk_boots_slot_a_through_uefi_grub(host, factory_digests):
    assert host.file("/sys/firmware/efi").is_directory, "not booted through UEFI"
    labels = host.run("lsblk -rno PARTLABEL /dev/vda").stdout.split()
    assert labels == ["esp", "rootfs_a", "rootfs_b", "data"]
    assert running_slot(host) == "a"
    assert host.run("findmnt -no SOURCE /").stdout.strip() == host.run(f"readlink -f {SLOT_DEVICE.format('a')}").stdout.strip()
    assert host.run("findmnt -no FSTYPE /boot/efi").stdout.strip() == "vfat"
    assert host.file("/boot/grub").linked_to == "/boot/efi/grub"
    env = grubenv(host)
    assert env["rootfs_slot"] == "a"
    assert env["upgrade_available"] == "0"
    assert host.file("/etc/hwrevision").content_string == "n3x-lab 1.0\n"
    assert host.file("/etc/n3x-build").content_string == "factory\n"
    assert host.file("/etc/swupdate/swupdate.crt").exists
    assert host.package("swupdate").is_installed
    assert host.run("findmnt -no OPTIONS /").stdout.split(",")[0] == "ro"
    assert set(factory_digests) == {"a", "b"}


# --- swupdate-bundle-validation ----------------------------------------------------------


@pytest.mark.parametrize("case", ["unsigned", "altered image", "other key", "other hardware revision", "other board"])
def test_swupdate_bundle_validation_rejects(host, rejected, factory_digests, read_only_root, case):
    path, reason = rejected[case]
    env_before = grubenv(host)
    push(host, path)
    result = install(host, bundle=REMOTE_BUNDLE)
    assert result.get("outcome") == "failed", result
    assert reason.lower() in result["log"].lower(), result["log"]
    assert slot_digests(host) == factory_digests, f"{case}: a slot was written"
    assert grubenv(host) == env_before, f"{case}: grubenv changed"


# --- swupdate-apply ----------------------------------------------------------------------


def test_swupdate_apply_writes_the_inactive_slot_only(host, update_bundle, update_rootfs, factory_digests, read_only_root):
    assert running_slot(host) == "a"
    push(host, update_bundle)
    result = install(host, bundle=REMOTE_BUNDLE)
    assert result.get("outcome") == "successful", result
    assert (result["active_slot"], result["slot"], result["selection"]) == ("a", "b", "stable,slot_b")
    assert "Verified OK" in result["log"] or "verified" in result["log"].lower(), result["log"]
    digests = slot_digests(host)
    assert digests["a"] == factory_digests["a"], "the running slot changed"
    assert digests["b"] == sha256_file(update_rootfs), "slot b is not the bundle's image"
    env = grubenv(host)
    assert (env["rootfs_slot"], env["rootfs_fallback"], env["upgrade_available"], env["boot_count"]) == ("b", "a", "1", "0")
    assert running_slot(host) == "a"
    host.run(f"rm -f {REMOTE_BUNDLE}")


# --- swupdate-boot-switch ----------------------------------------------------------------


def test_swupdate_boot_switch_runs_the_new_slot(host):
    reboot(host)
    assert running_slot(host) == "b"
    assert host.run("findmnt -no SOURCE /").stdout.strip() == host.run(f"readlink -f {SLOT_DEVICE.format('b')}").stdout.strip()
    assert host.file("/etc/n3x-build").content_string == "update-2.0.0\n"
    env = wait_confirmed(host)
    assert (env["rootfs_slot"], env["upgrade_available"], env["boot_count"]) == ("b", "0", "0")


# --- swupdate-network-ota (and the switch back) ------------------------------------------


def test_swupdate_network_ota_installs_from_an_http_server(host, network_bundle, work):
    with BundleServer(work) as server:
        result = install(host, url=server.url(network_bundle.name))
    assert result.get("outcome") == "successful", result
    assert (result["active_slot"], result["slot"]) == ("b", "a")
    assert any(f"GET /{network_bundle.name}" in line and " 200 " in line for line in server.requests), server.requests
    assert grubenv(host)["rootfs_slot"] == "a"


def test_swupdate_boot_switch_back_to_slot_a(host):
    reboot(host)
    assert running_slot(host) == "a"
    assert host.file("/etc/n3x-build").content_string == "update-3.0.0\n"
    env = wait_confirmed(host)
    assert (env["rootfs_slot"], env["rootfs_fallback"], env["upgrade_available"]) == ("a", "b", "0")


# --- playbooks/ota.yml -------------------------------------------------------------------


def test_ota_playbook_updates_the_node(host, update_bundle):
    result = run_ota(host, update_bundle)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert running_slot(host) == "b"
    assert host.file("/etc/n3x-build").content_string == "update-2.0.0\n"
    assert grubenv(host)["upgrade_available"] == "0"
    assert not host.file("/data/n3x-ota.swu").exists


# --- swupdate-rollback -------------------------------------------------------------------


def test_swupdate_rollback_returns_to_the_previous_slot(host, broken_bundle, serial_log):
    assert running_slot(host) == "b"
    push(host, broken_bundle)
    result = install(host, bundle=REMOTE_BUNDLE)
    assert result.get("outcome") == "successful", result
    assert grubenv(host)["rootfs_slot"] == "a"
    seen = serial_log.stat().st_size
    reboot(host)
    console = serial_log.read_bytes()[seen:].decode(errors="replace")
    # GRUB tried the new slot boot_attempts (3) times, then went back for good.
    assert console.count("n3x: booting slot a (upgrade_available=1") == 3, console[-4000:]
    assert "back to slot b" in console, console[-4000:]
    assert running_slot(host) == "b"
    assert host.file("/etc/n3x-build").content_string == "update-2.0.0\n"
    env = wait_confirmed(host)
    assert (env["rootfs_slot"], env["upgrade_available"], env["boot_count"]) == ("b", "0", "0")
    host.run(f"rm -f {REMOTE_BUNDLE}")


def test_ota_playbook_stops_when_the_node_rolls_back(host, broken_bundle):
    result = run_ota(host, broken_bundle)
    assert result.returncode != 0, result.stdout[-4000:]
    # Whitespace normalised: the callback may wrap the message.
    assert "GRUB rolled back" in " ".join((result.stdout + result.stderr).split()), result.stdout[-4000:] + result.stderr[-2000:]
    assert running_slot(host) == "b"
    assert grubenv(host)["upgrade_available"] == "0"


def test_grubenv_is_the_one_grub_reads(host):
    # swupdate -B grub writes /boot/grub/grubenv: the ESP's, where GRUB's load_env reads it.
    assert host.run(f"readlink -f {GRUBENV}").stdout.strip() == "/boot/efi/grub/grubenv"
