"""SWUpdate A/B OTA on a lab VM booted by OVMF and GRUB from its own A/B disk.

The tests run in file order against one VM, each starting from the state the previous one
left (which slot runs), so the VM boots as few times as possible (two reboots, one of them
into a slot that hangs):
  factory image on both slots, a runs
  -> refusals: a tampered bundle, another signer, a delta for another base (nothing written)
  -> 2.1.0, a delta (the image rebuilt with one package more) to b, its missing chunks
     fetched from the lab's update server with HTTP range requests; reboot: b runs it,
     confirmed by its health check, and the node is still itself
  -> 3.0.0, encrypted (-K), downloaded by swupdate -d, to a: a slot that hangs in
     userspace; reboot: the watchdog resets the trial boot, GRUB goes back to b
ota-rollout applies the full compressed bundle with playbooks/ota.yml on three boards.
Each phase's wall time goes to ~/.cache/n3x/bench/ota-phases-swupdate-ab-ota.json.
"""

import os
import pathlib
import time

import pytest
from ota_helpers import (
    ARTIFACTS,
    GRUBENV,
    HOST_FROM_GUEST,
    REMOTE_BUNDLE,
    SLOT_DEVICE,
    Phases,
    UpdateServer,
    bundle,
    confirm_log,
    derived_rootfs,
    grubenv,
    hanging_rootfs,
    identity,
    install,
    keys,
    lab_images,
    push,
    reboot,
    running_slot,
    sectors_written,
    swu,
    vm_state,
)


@pytest.fixture(scope="module")
def state():
    """What one test leaves for a later one (the node's identity before the update)."""
    return {}


@pytest.fixture(scope="module")
def phases():
    return Phases()


@pytest.fixture(scope="module")
def node(host):
    return host.backend.get_hostname()


@pytest.fixture(scope="module")
def images():
    return lab_images()


@pytest.fixture(scope="module")
def serial_log(node):
    argv = vm_state(node)["argv"]
    return pathlib.Path(argv[argv.index("-serial") + 1].removeprefix("file:"))


@pytest.fixture(scope="module")
def lab_keys():
    return keys()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("ota")


@pytest.fixture(scope="module")
def factory_sha256(images):
    return swu.file_digests(str(images["base"] / "root.img"))[0]


@pytest.fixture(scope="module")
def server(work):
    (work / "served").mkdir(exist_ok=True)
    with UpdateServer(work / "served") as running:
        yield running


def delta(images, base, version, lab_keys, work, server):
    """A delta bundle of the update image against `base`, served with its chunks by the lab's update server."""
    return bundle(
        work / "served" / f"update-{version}-delta.swu",
        images["update"] / "root.img",
        version,
        *lab_keys[:2],
        image_options={"delta_base": str(base)},
        delta_url=f"http://{HOST_FROM_GUEST}:{server.port}/",
        delta_dir=str(work / "served"),
    ) | {"path": work / "served" / f"update-{version}-delta.swu", "url": f"http://{HOST_FROM_GUEST}:{server.port}/update-{version}-delta.swu"}


@pytest.fixture(scope="module")
def delta_2_1(images, lab_keys, work, server, phases):
    """2.1.0: the image rebuilt with one package more, as a delta against the factory image."""
    started = time.time()
    result = delta(images, images["base"] / "root.img", "2.1.0", lab_keys, work, server)
    info = result["images"][0]["delta"]
    phases.record("build 2.1.0 (delta)", time.time() - started, bundle_bytes=result["size"], zck_bytes=info["zck_size"], chunks=info["chunks"])
    return result


@pytest.fixture(scope="module")
def delta_for_another_base(images, lab_keys, work, server):
    """The same update as a delta against an image this node does not run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    other = derived_rootfs(images["base"] / "root.img", ARTIFACTS / "lab-rootfs-2.0.0.ext4", "update-2.0.0")
    return delta(images, other, "2.1.0-other-base", lab_keys, work, server)


@pytest.fixture(scope="module")
def hang_bundle_3(images, lab_keys, work, server):
    """3.0.0: encrypted with the fleet's AES key; its slot hangs in userspace; one boot attempt."""
    rootfs = hanging_rootfs(images["base"], work / "rootfs-3.0.0-hangs.ext4")
    key, cert, aes = lab_keys
    result = bundle(work / "served" / "hangs-3.0.0.swu", rootfs, "3.0.0", key, cert, aes_key=aes, boot_attempts=1)
    return result | {"url": f"http://{HOST_FROM_GUEST}:{server.port}/hangs-3.0.0.swu", "rootfs": rootfs}


# --- the image ------------------------------------------------------------------------


def test_the_board_boots_slot_a_with_a_watchdog(host, node, factory_sha256):
    assert host.file("/sys/firmware/efi").is_directory, "not booted through UEFI"
    assert host.run("lsblk -rno PARTLABEL /dev/vda").stdout.split() == ["esp", "rootfs_a", "rootfs_b", "data"]
    assert running_slot(host) == "a"
    assert host.file("/boot/grub").linked_to == "/boot/efi/grub"
    env = grubenv(host)
    assert (env["rootfs_slot"], env["upgrade_available"]) == ("a", "0")
    # Both slots hold the image's root filesystem, and grubenv says so (deltas name their base by it).
    assert env["rootfs_a_image"] == env["rootfs_b_image"] == factory_sha256
    assert env["rootfs_a_version"] == "factory"
    # disk boot mode: the lab named the VM (GRUB's command line carries no systemd.hostname=).
    assert host.run("hostname").stdout.strip() == node
    # The initrd armed the watchdog; systemd (PID 1) pets it.
    assert host.file("/dev/watchdog0").exists
    assert host.run("systemctl show -p RuntimeWatchdogUSec --value").stdout.strip() in ("30s", "30000000")
    assert host.file("/sys/class/watchdog/watchdog0/state").content_string.strip() == "active"
    assert host.run("systemctl is-active n3x-boot-confirm.service").stdout.strip() == "active"
    assert host.file("/etc/hwrevision").content_string == "n3x-lab 1.0\n"
    assert host.package("swupdate").is_installed


# --- refused: nothing is written ------------------------------------------------------


@pytest.fixture(scope="module")
def refusals(lab_keys, work):
    """Small bundles swupdate must refuse (the host's integration test has the full set)."""
    payload = work / "small.ext4"
    payload.write_bytes(os.urandom(1024 * 1024))
    key, cert, _aes = lab_keys
    other_key, other_cert = str(work / "other.key"), str(work / "other.crt")
    swu.generate_signing_key(other_key, other_cert, common_name="somebody else", bits=2048)
    good = bundle(work / "small-good.swu", payload, "1.0.1", key, cert, preserve=[])
    data = bytearray((work / "small-good.swu").read_bytes())
    header, start, size = swu.member_span(data, good["members"][2])
    data[start + 4096] ^= 0xFF
    data[header + 102 : header + 110] = b"%08X" % (sum(data[start : start + size]) & 0xFFFFFFFF)
    (work / "small-altered.swu").write_bytes(bytes(data))
    bundle(work / "small-other-key.swu", payload, "1.0.1", other_key, other_cert, preserve=[])
    return {
        "altered compressed image": (work / "small-altered.swu", "HASH mismatch"),
        "signed by another key": (work / "small-other-key.swu", "Authentication of all signatures failed"),
    }


@pytest.mark.parametrize("case", ["altered compressed image", "signed by another key"])
def test_a_bad_bundle_is_refused_and_nothing_is_written(host, refusals, case):
    path, reason = refusals[case]
    env_before, written_before = grubenv(host), sectors_written(host)
    push(host, path)
    result = install(host, bundle=REMOTE_BUNDLE)
    assert result.get("outcome") == "failed", result
    assert reason.lower() in result["log"].lower(), result["log"]
    assert sectors_written(host)["b"] == written_before["b"], f"{case}: slot b was written"
    assert {k: v for k, v in grubenv(host).items() if k not in ("ustate", "recovery_status")} == env_before


def test_a_delta_for_another_base_is_refused_before_anything_is_written(host, delta_for_another_base, server):
    # The delta rebuilds 2.1.0 from the chunks of another 2.0.0; this node runs the factory image.
    env_before, written_before, served_before = grubenv(host), sectors_written(host), sum(server.sent.values())
    push(host, delta_for_another_base["path"])
    result = install(host, bundle=REMOTE_BUNDLE)
    assert result.get("outcome") == "refused", result
    assert "delta base mismatch" in result["msg"], result
    assert grubenv(host) == env_before
    # The bundle's own preinstall script refuses it too, when swupdate runs without the module
    # (run again while swupdate 2022.12's start-up race cuts a run short; see install_outcome).
    direct = host.run(
        "mkdir -p /data/swupdate; for i in 1 2 3 4 5; do out=$(TMPDIR=/data/swupdate swupdate -v -B grub -k /etc/swupdate/swupdate.crt "
        f"-e stable,slot_b -i {REMOTE_BUNDLE} 2>&1); case $out in *'n3x: delta base mismatch'*) break ;; esac; done; echo \"$out\""
    )
    assert "n3x: delta base mismatch" in direct.stdout, direct.stdout[-3000:]
    assert "Total downloaded data" not in direct.stdout
    assert sectors_written(host)["b"] == written_before["b"], "slot b was written"
    assert sum(server.sent.values()) == served_before, "chunks were fetched"
    # swupdate marks its failed attempt in grubenv (recovery_status, ustate); nothing else changed.
    assert {k: v for k, v in grubenv(host).items() if k not in ("ustate", "recovery_status")} == env_before
    host.run(f"grub-editenv {GRUBENV} unset ustate recovery_status; rm -f {REMOTE_BUNDLE}")


# --- 2.1.0: a delta -----------------------------------------------------------------------


def test_a_one_package_delta_transfers_under_5_percent_of_the_slot(host, delta_2_1, server, phases, state):
    # The node's own identity, unlike the image's: its name (the lab's), new SSH host keys.
    setup = host.run("rm -f /etc/ssh/ssh_host_* && ssh-keygen -A")
    assert setup.rc == 0, setup.stderr
    served_before = sum(server.sent.values())
    # swupdate -d fetches the bundle (the zchunk header) and then the chunks it lacks, both
    # from the lab's update server; its preinstall script checks the base.
    result = phases.timed("install 2.1.0 (delta, swupdate -d)", install, host, url=delta_2_1["url"], health_check='{"timeout": 90}')
    assert result.get("outcome") == "successful", result
    assert (result["active_slot"], result["slot"]) == ("a", "b")
    assert f"n3x: delta base {delta_2_1['images'][0]['delta']['base_sha256'][:16]} matches slot a" in result["log"]
    assert "n3x: preserved /etc/hostname" in result["log"]
    fetched = sum(server.sent.values()) - served_before
    slot = delta_2_1["images"][0]["written_size"]
    transferred = fetched + delta_2_1["size"]
    phases.record("delta 2.1.0 transfer", 0, range_bytes=fetched, bundle_bytes=delta_2_1["size"], slot_bytes=slot, percent=round(100 * transferred / slot, 2))
    assert fetched > 0, "no chunk was fetched"
    assert transferred <= slot * 0.05, f"{transferred} bytes moved for a {slot}-byte slot"
    env = grubenv(host)
    assert (env["rootfs_slot"], env["rootfs_fallback"], env["upgrade_available"], env["boot_count"]) == ("b", "a", "1", "0")
    assert (env["rootfs_b_image"], env["rootfs_b_version"]) == (delta_2_1["images"][0]["written_sha256"], "2.1.0")
    assert running_slot(host) == "a"
    state["identity"] = identity(host)
    assert state["identity"]["boot_confirm_conf"].splitlines()[1] == "timeout=90"
    host.run(f"rm -f {REMOTE_BUNDLE}")


def test_the_new_slot_confirms_itself_once_healthy_and_keeps_the_node_identity(host, node, phases, state):
    phases.timed("reboot into 2.1.0 and confirm", reboot, host)
    assert running_slot(host) == "b"
    assert host.file("/usr/bin/less").exists, "the one package the update adds"
    env = grubenv(host)
    assert (env["rootfs_slot"], env["upgrade_available"], env["boot_count"]) == ("b", "0", "0")
    # The confirmation cleared swupdate's update markers.
    assert "ustate" not in env
    assert "recovery_status" not in env
    assert "n3x: confirmed slot b (healthy: eth0" in confirm_log(host)
    # hostname, machine id, SSH host key and the node's n3x config came along.
    assert identity(host) == state["identity"]
    assert state["identity"]["hostname"] == node


# --- 3.0.0: encrypted, and it hangs ----------------------------------------------------------


def test_an_encrypted_bundle_installs_with_the_nodes_aes_key(host, hang_bundle_3, lab_keys, phases):
    assert hang_bundle_3["images"][0]["encrypted"]
    push(host, lab_keys[2], "/etc/swupdate/aes.key")
    assert host.file("/etc/swupdate/aes.key").mode == 0o600
    result = phases.timed("install 3.0.0 (encrypted, swupdate -d)", install, host, url=hang_bundle_3["url"], aes_key="/etc/swupdate/aes.key")
    assert result.get("outcome") == "successful", result
    assert "-K" in result["cmd"]
    # Decrypted, decompressed and written: slot b now holds exactly the hanging image.
    assert "Readback verification success" in result["log"]
    env = grubenv(host)
    assert (env["rootfs_slot"], env["boot_attempts"], env["rootfs_a_version"]) == ("a", "1", "3.0.0")


def test_a_slot_that_hangs_is_rolled_back_by_the_watchdog(host, serial_log, phases, state):
    seen = serial_log.stat().st_size
    phases.timed("reboot into 3.0.0: hang, watchdog, back to 2.1.0", reboot, host)
    console = serial_log.read_bytes()[seen:].decode(errors="replace")
    assert "n3x test: this slot hangs in userspace" in console, console[-4000:]
    assert "back to slot b" in console, console[-4000:]
    assert running_slot(host) == "b"
    assert host.file("/usr/bin/less").exists
    env = grubenv(host)
    # GRUB went back and marked the update failed (swupdate's STATE_FAILED).
    assert (env["rootfs_slot"], env["upgrade_available"], env["ustate"]) == ("b", "0", "3")
    assert identity(host)["hostname"] == state["identity"]["hostname"]


def test_the_slots_are_the_partitions_grub_boots(host):
    assert host.run(f"readlink -f {GRUBENV}").stdout.strip() == "/boot/efi/grub/grubenv"
    assert host.run("findmnt -no SOURCE /").stdout.strip() == host.run(f"readlink -f {SLOT_DEVICE.format('b')}").stdout.strip()
