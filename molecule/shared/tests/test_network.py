"""L2: each node holds exactly the network its profile describes (PHASE 2 to 2.7 of the original)."""

import ipaddress

import pytest
from lab_helpers import ip_json, ping_each

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import network_roles, node_interfaces, node_vlan_ids

MANAGEMENT = "eth0"


def lab_addresses(host):
    """{interface: [address/prefix]} of every IPv4 address outside the management NIC."""
    found = {}
    for link in ip_json(host, "-4", "addr", "show"):
        if link["ifname"] in (MANAGEMENT, "lo"):
            continue
        for info in link.get("addr_info", []):
            found.setdefault(link["ifname"], []).append(f"{info['local']}/{info['prefixlen']}")
    return found


def test_interfaces_exist_and_up(host, profile, node, expected):
    for name in expected:
        link = ip_json(host, "link", "show", "dev", name)[0]
        assert "UP" in link["flags"], f"{name} is not up: {link['flags']}"


def test_exactly_the_profile_addresses(host, expected):
    # Also the cross-contamination check: no address on the wrong interface.
    found = lab_addresses(host)
    assert {k: sorted(v) for k, v in found.items()} == {k: sorted(v) for k, v in expected.items()}


def test_vlan_ids(host, profile, node):
    ids = node_vlan_ids(profile, node)
    if not ids:
        pytest.skip("the profile has no VLANs")
    names = node_interfaces(profile, node)
    for role, vlan in ids.items():
        link = ip_json(host, "-d", "link", "show", "dev", names[role])[0]
        info = link["linkinfo"]
        assert info["info_kind"] == "vlan"
        assert info["info_data"]["id"] == vlan, f"{names[role]} carries VLAN {info['info_data']['id']}, want {vlan}"
        assert link["link"] == profile["interfaces"]["trunk"]


def test_routes_via_the_right_interface(host, profile, node, expected):
    names = node_interfaces(profile, node)
    routes = ip_json(host, "-4", "route", "show", "proto", "kernel")
    by_destination = {route["dst"]: route["dev"] for route in routes}
    for role in network_roles(profile):
        address = profile["ip_addresses"][node][role]
        network = str(ipaddress.IPv4Network(f"{address}/{profile['prefix_length']}", strict=False))
        assert by_destination.get(network) == names[role], f"{network} routed via {by_destination.get(network)}, want {names[role]}"


def test_dhcp_addresses_are_leases(host, profile, node, expected):
    if profile["addressing"] != "dhcp":
        pytest.skip("static addressing")
    name = node_interfaces(profile, node)["cluster"]
    (info,) = ip_json(host, "-4", "addr", "show", "dev", name)[0]["addr_info"]
    assert info.get("dynamic") is True, f"{name} address {info['local']} is not from DHCP"
    assert info["local"] == profile["ip_addresses"][node]["cluster"]


def test_peers_reachable_on_every_role(host, profile, node, lab_nodes, expected):
    names = node_interfaces(profile, node)
    peers = {(names[role], profile["ip_addresses"][peer][role]): peer for role in network_roles(profile) for peer in lab_nodes if peer != node}
    for (interface, address), (rc, output) in ping_each(host, list(peers)).items():
        assert rc == 0, f"{node} cannot reach {peers[interface, address]} at {address} on {interface}: {output}"


def test_bond(host, profile, node, expected):
    bond = profile.get("bond")
    if not bond:
        pytest.skip("the profile has no bond")
    trunk = profile["interfaces"]["trunk"]
    state = host.file(f"/proc/net/bonding/{trunk}").content_string
    modes = {"active-backup": "fault-tolerance (active-backup)"}
    assert f"Bonding Mode: {modes.get(bond['mode'], bond['mode'])}" in state
    assert f"MII Polling Interval (ms): {bond['miimon']}" in state
    assert f"Up Delay (ms): {bond['updelay']}" in state
    assert f"Down Delay (ms): {bond['downdelay']}" in state
    assert "MII Status: up" in state
    if "primary" in bond:
        assert f"Primary Slave: {bond['primary']}" in state
        assert f"Currently Active Slave: {bond['primary']}" in state
    for member in profile["interfaces"]["bond_members"]:
        assert f"Slave Interface: {member}" in state


def test_dhcp_server_leased_the_reserved_addresses(host, profile, node, lab_nodes):
    if node in profile["ip_addresses"] or profile["addressing"] != "dhcp":
        pytest.skip("not the lab's DHCP server")
    assert host.service("n3x-dhcp.service").is_running
    leases = host.file("/var/lib/misc/n3x-dnsmasq.leases").content_string
    for peer in lab_nodes:
        mac, address = profile["mac_addresses"][peer], profile["ip_addresses"][peer]["cluster"]
        assert f" {mac} {address} " in leases, f"no lease of {address} to {peer} ({mac}):\n{leases}"
