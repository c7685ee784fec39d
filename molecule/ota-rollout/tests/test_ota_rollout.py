"""playbooks/ota.yml across three A/B boards: canary, batches, health-gated confirmation, stop.

server-1 (the canary) gets 2.0.0 and confirms it: networkd configured the profile's eth1.
server-2 gets a bundle whose slot masks systemd-networkd: its health check never passes, it
goes back to its old slot, and the rollout stops. agent-1, in the next batch, is never
touched. The bundles come from the lab's update server (swupdate -d).
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
from ota_helpers import (
    ARTIFACTS,
    HOST_FROM_GUEST,
    Phases,
    UpdateServer,
    bundle,
    derived_rootfs,
    grubenv,
    keys,
    running_slot,
    sectors_written,
    vm_state,
)

REPO = pathlib.Path(__file__).resolve().parents[3]
BIN = pathlib.Path(sys.executable).parent
NODES = ["server-1", "server-2", "agent-1"]
HEALTH_TIMEOUT = 30


# The tests take no `host`: testinfra would run each once per board, and the rollout once
# per board too. They reach every board themselves.
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")


@pytest.fixture(scope="module")
def hosts():
    import testinfra

    assert INVENTORY, "MOLECULE_INVENTORY_FILE is not set: run this through molecule verify"
    return {name: testinfra.get_host(f"ansible://{name}", ansible_inventory=INVENTORY) for name in NODES}


@pytest.fixture(scope="module")
def base_image():
    return pathlib.Path(vm_state("server-1")["root"]).parent / "root.img"


@pytest.fixture(scope="module")
def served(tmp_path_factory, base_image):
    """The lab's update server with the good bundle and the one whose slot never gets healthy."""
    directory = tmp_path_factory.mktemp("served")
    key, cert, _ = keys()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    good = derived_rootfs(base_image, ARTIFACTS / "lab-rootfs-2.0.0.ext4", "update-2.0.0")
    bad = derived_rootfs(base_image, ARTIFACTS / "lab-rootfs-2.0.0-no-network.ext4", "update-2.0.0-no-network", mask=["systemd-networkd.service"])
    started = time.time()
    built = bundle(directory / "good.swu", good, "2.0.0", key, cert)
    image = built["images"][0]
    Phases().record("build 2.0.0 (compressed)", time.time() - started, bundle_bytes=built["size"], slot_bytes=image["written_size"], ratio=built["ratio"])
    bundle(directory / "bad.swu", bad, "2.0.0", key, cert)
    with UpdateServer(directory) as server:
        server.built = built
        yield server


@pytest.fixture(scope="module")
def before(hosts):
    return {
        name: {
            "slot": running_slot(h),
            "env": grubenv(h),
            "boot_id": h.file("/proc/sys/kernel/random/boot_id").content_string.strip(),
            "written": sectors_written(h),
        }
        for name, h in hosts.items()
    }


@pytest.fixture(scope="module")
def rollout(served, before, tmp_path_factory):
    """Run the rollout once: canary 1, then batches of 1 node."""
    work = tmp_path_factory.mktemp("rollout")
    url = f"http://{HOST_FROM_GUEST}:{served.port}"
    # server-2's own bundle: a host variable beats the fleet's (group all).
    (work / "bundles.yml").write_text(json.dumps({"all": {"vars": {"bundle_url": f"{url}/good.swu"}, "hosts": {"server-2": {"bundle_url": f"{url}/bad.swu"}}}}))
    report = work / "report.json"
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    argv = [str(BIN / "ansible-playbook"), "-i", INVENTORY, "-i", str(work / "bundles.yml"), "playbooks/ota.yml"]
    argv += ["-e", "ota_canary=1", "-e", "ota_batch=1", "-e", f"ota_health_timeout={HEALTH_TIMEOUT}", "-e", f"ota_report={report}"]
    started = time.time()
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.time() - started
    rows = json.loads(report.read_text()) if report.exists() else []
    phases = Phases()
    phases.record("ota.yml (canary ok, server-2 rolled back, stop)", seconds)
    for row in rows:
        phases.record(f"{row['node']}: {row['result']}", sum(row["seconds"].values()) if row["seconds"] else 0, **row["seconds"])
    return {"result": result, "rows": {row["node"]: row for row in rows}, "served": served.requests}


def test_the_bundle_is_a_fraction_of_the_slot(served):
    image = served.built["images"][0]
    assert image["compressed"] == "zstd"
    assert served.built["size"] <= image["written_size"] / 4, f"{served.built['size']} bytes for a {image['written_size']}-byte slot"


def test_the_rollout_stops_at_the_node_that_rolled_back(rollout):
    result = rollout["result"]
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, result.stdout[-4000:]
    assert "server-2: rolled-back" in output, result.stdout[-6000:]
    assert "Stopping the rollout" in output
    assert [rollout["rows"][n]["result"] for n in NODES] == ["updated", "rolled-back", "untouched"], rollout["rows"]
    assert [rollout["rows"][n]["batch"] for n in NODES] == ["canary", "1", "2"]


def test_the_canary_runs_the_update_confirmed_by_its_health_check(hosts, rollout):
    node = hosts["server-1"]
    row = rollout["rows"]["server-1"]
    assert (row["slot_before"], row["slot"], row["version_before"], row["version"]) == ("a", "b", "factory", "2.0.0")
    assert running_slot(node) == "b"
    assert node.file("/etc/n3x-build").content_string == "update-2.0.0\n"
    env = grubenv(node)
    assert (env["upgrade_available"], env["rootfs_b_version"]) == ("0", "2.0.0")
    assert "ustate" not in env
    assert "recovery_status" not in env
    log = node.run("journalctl -b -u n3x-boot-confirm.service -o cat --no-pager").stdout
    assert "n3x: confirmed slot b" in log
    assert "eth1" in log
    # The node kept its name and its network: the profile's address on eth1, after the update.
    assert node.run("hostname").stdout.strip() == "server-1"
    assert "192.168.1.1/24" in node.run("ip -o -4 addr show dev eth1").stdout
    assert node.file("/etc/n3x/boot-confirm.conf").contains(f"timeout={HEALTH_TIMEOUT}")


def test_the_node_whose_health_check_fails_is_back_on_its_old_slot(hosts, rollout, before):
    node = hosts["server-2"]
    row = rollout["rows"]["server-2"]
    assert (row["slot_before"], row["slot"], row["version"]) == ("a", "a", "factory")
    assert running_slot(node) == "a"
    assert node.file("/etc/n3x-build").content_string == "factory\n"
    env = grubenv(node)
    # The failed update is recorded (swupdate's STATE_FAILED), and GRUB boots slot a.
    assert (env["rootfs_slot"], env["upgrade_available"], env["ustate"], env["rootfs_b_version"]) == ("a", "0", "3", "2.0.0")
    serial = pathlib.Path(vm_state("server-2")["argv"][vm_state("server-2")["argv"].index("-serial") + 1].removeprefix("file:"))
    console = serial.read_text(errors="replace")
    assert f"n3x: slot b is not healthy after {HEALTH_TIMEOUT}s: networkd has not configured eth1" in console, console[-3000:]
    assert "192.168.1.2/24" in node.run("ip -o -4 addr show dev eth1").stdout


def test_the_node_after_the_stop_is_untouched(hosts, rollout, before):
    node = hosts["agent-1"]
    assert node.file("/proc/sys/kernel/random/boot_id").content_string.strip() == before["agent-1"]["boot_id"], "agent-1 rebooted"
    assert grubenv(node) == before["agent-1"]["env"]
    assert sectors_written(node)["b"] == before["agent-1"]["written"]["b"], "agent-1's slot b was written"
    assert not node.file("/etc/n3x/boot-confirm.conf").exists
    assert not node.file("/data/n3x-ota.swu").exists
    row = rollout["rows"]["agent-1"]
    assert (row["slot"], row["version"]) == ("a", "factory")
