"""After the take-over (and again after a reboot): the profile's exact network, as the shared L2
checks assert it, and what the take-over left on each node - the stock manager let go of
eth1, everything it changed is recorded with the originals, eth0 (SSH) is untouched."""

import json

import pytest
from test_network import (  # noqa: F401 - the shared L2 checks, collected here too
    test_exactly_the_profile_addresses,
    test_interfaces_exist_and_up,
    test_peers_reachable_on_every_role,
    test_routes_via_the_right_interface,
    test_vlan_ids,
)

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_network_claims import dhcp_client_interfaces

RECORD = "/var/lib/n3x/networkd-takeover/record.json"
MANAGER = {"server-1": "netplan", "server-2": "NetworkManager", "agent-1": "ifupdown"}


@pytest.fixture
def record(host):
    assert host.file(RECORD).mode == 0o600
    return json.loads(host.file(RECORD).content_string)


def test_management_nic_untouched(host):
    assert "10.0.2.15/24" in host.run("ip -4 -br address show dev eth0").stdout
    status = host.run("networkctl status eth0 --no-pager").stdout
    assert "/etc/systemd/network/10-eth0-mgmt.network" in status


def test_networkd_configures_the_nic_from_our_unit(host):
    status = host.run("networkctl status eth1 --no-pager").stdout
    assert "Network File: /etc/systemd/network/20-n3x-eth1.network" in status
    assert "State: carrier (configured)" in status or "State: routable (configured)" in status


def test_no_dhcp_client_runs(host):
    # From ps, not pgrep -f: the shell running pgrep would match its own pattern.
    clients = [line for line in host.run("ps -eo pid=,args=").stdout.splitlines() if dhcp_client_interfaces(line.split()[1:]) is not None]
    assert clients == []


def test_the_take_over_is_recorded_with_its_originals(host, node, record):
    managers = {entry["manager"] for entry in record["files"].values()}
    assert MANAGER[node] in managers
    for path, entry in record["files"].items():
        if entry.get("backup"):
            assert host.file(entry["backup"]).exists, path
            assert host.run(f"sha256sum < {entry['backup']}").stdout.split()[0] == entry["original_sha256"]


def netplan_let_go(host):
    """netplan renders nothing for eth1 any more, and still renders eth0."""
    assert not host.file("/run/systemd/network/10-netplan-eth1.network").exists
    assert host.file("/run/systemd/network/10-netplan-eth0.network").exists
    text = host.file("/etc/netplan/50-cloud-init.yaml").content_string
    assert "eth0:" in text
    assert "eth1:" not in text


def networkmanager_let_go(host):
    """NetworkManager runs and leaves every interface of the profile alone."""
    devices = dict(line.split(":", 1) for line in host.run("nmcli -t -f DEVICE,STATE device status").stdout.splitlines())
    for name in ("eth0", "eth1", "eth1.100", "eth1.200"):
        assert devices.get(name) == "unmanaged", devices
    assert host.service("NetworkManager").is_running


def ifupdown_let_go(host):
    """ifupdown has no stanza left for eth1 and does not hold it up."""
    assert host.run("ifquery --list --allow=hotplug").stdout.split() == []
    assert "eth1" not in host.run("ifquery --state").stdout
    text = host.file("/etc/network/interfaces").content_string
    assert "#n3x# allow-hotplug eth1\n#n3x# iface eth1 inet dhcp\n" in text


LET_GO = {"server-1": netplan_let_go, "server-2": networkmanager_let_go, "agent-1": ifupdown_let_go}


def test_the_stock_manager_let_go_of_the_nic(host, node):
    LET_GO[node](host)
