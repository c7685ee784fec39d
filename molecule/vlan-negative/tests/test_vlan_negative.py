"""Nodes on mismatched VLANs are isolated; nodes on the same VLAN id reach each other."""

import pytest
from lab_helpers import ping_each

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import network_roles, node_interfaces, node_vlan_ids

CONTROL_ADDRESS_OFFSET = 100


def test_each_node_tags_its_own_vlans(host, profile, node, expected):
    assert node_vlan_ids(profile, node) == {**profile["vlan_ids"], **profile["node_vlan_ids"].get(node, {})}
    for role, vlan in node_vlan_ids(profile, node).items():
        assert host.interface(f"{profile['interfaces']['trunk']}.{vlan}").exists, f"{role} VLAN {vlan} missing"


def test_reachability_follows_vlan_ids(host, profile, node, lab_nodes, expected):
    names = node_interfaces(profile, node)
    mine = node_vlan_ids(profile, node)
    probes = {(names[role], profile["ip_addresses"][peer][role]): (peer, role) for peer in lab_nodes if peer != node for role in network_roles(profile)}
    pinged = ping_each(host, list(probes), count=3, wait=1)
    outcomes = []
    for target, (peer, role) in probes.items():
        theirs = node_vlan_ids(profile, peer)
        outcomes.append((peer, role, mine[role], theirs[role], mine[role] == theirs[role], pinged[target][0] == 0))
    wrong = [o for o in outcomes if o[4] != o[5]]
    assert not wrong, "\n".join(
        f"{node} VLAN {a} -> {peer} VLAN {b} ({role}): {'reached' if reached else 'unreachable'}, expected {'reach' if same else 'isolation'}"
        for peer, role, a, b, same, reached in wrong
    )


def test_the_wire_works_with_a_matching_vlan(host, profile, node, lab_nodes, expected):
    """Positive control: a hand-made VLAN interface with the peer's id does reach it."""
    peers = [p for p in lab_nodes if p != node and node_vlan_ids(profile, p)["cluster"] != node_vlan_ids(profile, node)["cluster"]]
    if not peers:
        pytest.skip("no peer on another VLAN")
    peer = peers[0]
    vlan = node_vlan_ids(profile, peer)["cluster"]
    trunk = profile["interfaces"]["trunk"]
    peer_address = profile["ip_addresses"][peer]["cluster"]
    own = profile["ip_addresses"][node]["cluster"].rsplit(".", 1)
    control = f"{own[0]}.{int(own[1]) + CONTROL_ADDRESS_OFFSET}"
    name = f"n3xctl{vlan}"
    # A /32 route sends only this peer's traffic through the control VLAN; deleting the
    # link afterwards removes address and route with it.
    setup = host.run(
        f"ip link add link {trunk} name {name} type vlan id {vlan} && ip link set {name} up"
        f" && ip addr add {control}/32 dev {name} && ip route add {peer_address}/32 dev {name} src {control}"
    )
    try:
        assert setup.rc == 0, setup.stderr
        result = host.run(f"ping -c 3 -i 0.2 -W 2 -I {name} {peer_address}")
        assert result.rc == 0, f"{node} cannot reach {peer} even on its VLAN {vlan}: {result.stdout}"
    finally:
        host.run(f"ip link delete {name}")
