"""L2: two lab VMs share a lab segment; a pulled cable separates them, a plugged one rejoins."""

import os
import sys
import time

import pytest

# The lab's QMP helpers (the code behind n3x.cluster.lab_link) from this checkout.
sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], ".collections"))
from ansible_collections.n3x.cluster.plugins.module_utils import n3x_lab as lab

LAB_DIR = os.path.expanduser("~/.cache/n3x/lab/molecule-" + os.environ["MOLECULE_SCENARIO_NAME"])
PEERS = {"node-a": "192.168.77.2", "node-b": "192.168.77.1"}


@pytest.fixture
def peer(host):
    return PEERS[host.backend.get_hostname()]


def ping(host, address, count=2):
    return host.run(f"ping -c {count} -W 2 {address}").rc == 0


def test_eth1_is_up_with_carrier(host):
    assert host.file("/sys/class/net/eth1/carrier").content_string.strip() == "1"


def test_peer_answers_on_the_lab_segment(host, peer):
    assert ping(host, peer)


def test_cable_pull_cuts_the_link_and_plugging_restores_it(host, peer):
    name = host.backend.get_hostname()
    paths = lab.vm_paths(LAB_DIR, name)
    assert lab.set_link(paths, "eth1", False)
    try:
        time.sleep(0.5)
        assert host.file("/sys/class/net/eth1/carrier").content_string.strip() == "0"
        assert not ping(host, peer, count=1)
    finally:
        assert lab.set_link(paths, "eth1", True)
    for _ in range(20):
        if ping(host, peer, count=1):
            break
        time.sleep(0.5)
    else:
        pytest.fail("peer unreachable after plugging the cable back")
