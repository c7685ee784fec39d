"""Every validation rule: one clear line per problem, naming the file and the field."""

import copy

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import (
    ProfileError,
    load_profile,
    parse_profile_text,
    validate_profile,
)

VLANS = {
    "description": "vlans",
    "ip_addresses": {
        "server-1": {"cluster": "192.168.200.1", "storage": "192.168.100.1"},
        "server-2": {"cluster": "192.168.200.2", "storage": "192.168.100.2"},
        "agent-1": {"cluster": "192.168.200.3", "storage": "192.168.100.3"},
    },
    "interfaces": {"cluster": "eth1.200", "storage": "eth1.100", "trunk": "eth1"},
    "vlan_ids": {"cluster": 200, "storage": 100},
    "server_api": "https://192.168.200.1:6443",
}
BOND = {
    **copy.deepcopy(VLANS),
    "interfaces": {"cluster": "bond0.200", "storage": "bond0.100", "trunk": "bond0", "bond_members": ["eth1", "eth2"]},
    "bond": {"mode": "active-backup", "primary": "eth1", "miimon": 100, "updelay": 200, "downdelay": 200, "primary_reselect": "always"},
}
DHCP = {
    "addressing": "dhcp",
    "ip_addresses": {"server-1": {"cluster": "192.168.1.1"}, "agent-1": {"cluster": "192.168.1.3"}},
    "interfaces": {"cluster": "eth1"},
    "dhcp": {"server": "192.168.1.254", "range_start": "192.168.1.100", "range_end": "192.168.1.200", "lease_time": "12h"},
    "mac_addresses": {"server-1": "52:54:00:01:01:01", "agent-1": "52:54:00:01:01:03"},
    "server_api": "https://192.168.1.1:6443",
}


def problems_of(profile, source="profiles/x.yml"):
    with pytest.raises(ProfileError) as caught:
        validate_profile(profile, source)
    return str(caught.value).splitlines()


def changed(base, path, value):
    """A deep copy of base with the dotted path set (value DELETE removes the key)."""
    profile = copy.deepcopy(base)
    *parents, last = path.split(".")
    target = profile
    for key in parents:
        target = target[key]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return profile


DELETE = object()

CASES = [
    # unknown keys (typos), with a suggestion
    (VLANS, "vlan_id", {"cluster": 200}, "vlan_id: unknown key; did you mean 'vlan_ids'?"),
    (BOND, "bond.miimom", 100, "bond.miimom: unknown key; did you mean 'miimon'?"),
    (DHCP, "dhcp.rangestart", "192.168.1.10", "dhcp.rangestart: unknown key; did you mean 'range_start'?"),
    (VLANS, "interfaces.trunkk", "eth1", "interfaces.trunkk: unknown key; did you mean 'trunk'?"),
    # required keys and types
    (VLANS, "server_api", DELETE, "server_api: is required"),
    (VLANS, "interfaces.cluster", DELETE, "interfaces.cluster: is required (the interface k3s and flannel use)"),
    (VLANS, "ip_addresses", ["a"], "ip_addresses: must be a mapping, got ['a']"),
    (VLANS, "ip_addresses.Server_1", {"cluster": "192.168.200.9"}, "ip_addresses.Server_1: 'Server_1' is not a node name"),
    (VLANS, "addressing", "manual", "addressing: 'manual' is not one of: static, dhcp"),
    (VLANS, "prefix_length", 31, "prefix_length: 31 is not a prefix length from 1 to 30"),
    # invalid IPv4 / CIDR / MAC
    (VLANS, "ip_addresses.server-2.cluster", "192.168.1.300", "ip_addresses.server-2.cluster: '192.168.1.300' is not an IPv4 address"),
    (VLANS, "cluster_cidr", "10.42.0.0/33", "cluster_cidr: '10.42.0.0/33' is not an IPv4 CIDR (like 10.42.0.0/16)"),
    (VLANS, "service_cidr", "10.43.0.1/16", "service_cidr: '10.43.0.1/16' has host bits set; did you mean '10.43.0.0/16'?"),
    (DHCP, "mac_addresses.agent-1", "52:54:00:01:01", "mac_addresses.agent-1: '52:54:00:01:01' is not a MAC address"),
    (DHCP, "mac_addresses.agent-1", "01:00:5e:00:00:01", "mac_addresses.agent-1: '01:00:5e:00:00:01' is a multicast address"),
    (DHCP, "mac_addresses.agent-1", "52:54:00:01:01:01", "mac_addresses.agent-1: '52:54:00:01:01:01' is also the MAC of server-1"),
    (DHCP, "mac_addresses.nobody", "52:54:00:01:01:09", "mac_addresses.nobody: 'nobody' is not a node in ip_addresses"),
    # one role's addresses: one prefix, unique, not network/broadcast, on every node
    (
        VLANS,
        "ip_addresses.agent-1.cluster",
        "192.168.201.3",
        "ip_addresses.agent-1.cluster: 192.168.201.3 is outside 192.168.200.0/24, the cluster network of server-1",
    ),
    (VLANS, "ip_addresses.agent-1.cluster", "192.168.200.2", "ip_addresses.agent-1.cluster: 192.168.200.2 is also the cluster address of server-2"),
    (VLANS, "ip_addresses.agent-1.cluster", "192.168.200.0", "ip_addresses.agent-1.cluster: 192.168.200.0 is the network address of 192.168.200.0/24"),
    (VLANS, "ip_addresses.agent-1.cluster", "192.168.200.255", "ip_addresses.agent-1.cluster: 192.168.200.255 is the broadcast address of 192.168.200.0/24"),
    (VLANS, "ip_addresses.agent-1.storage", DELETE, "ip_addresses.agent-1.storage: is missing: the other nodes have a storage address"),
    (VLANS, "interfaces.storage", DELETE, "interfaces.storage: is missing: nodes have storage addresses but no interface carries them"),
    (VLANS, "prefix_length", 16, "ip_addresses.server-1.storage: the storage network 192.168.0.0/16 overlaps the cluster network 192.168.0.0/16"),
    (VLANS, "interfaces.backup", "eth2", "interfaces.backup: no node has a backup address in ip_addresses"),
    # VLANs
    (VLANS, "vlan_ids.cluster", 4095, "vlan_ids.cluster: 4095 is not a VLAN id (a whole number from 1 to 4094)"),
    (VLANS, "vlan_ids.cluster", 0, "vlan_ids.cluster: 0 is not a VLAN id"),
    (VLANS, "vlan_ids.cluster", "200", "vlan_ids.cluster: '200' is not a VLAN id"),
    (VLANS, "vlan_ids.storage", 200, "vlan_ids: VLAN id 200 is used by more than one role: cluster, storage"),
    (VLANS, "interfaces.cluster", "eth1.201", "interfaces.cluster: 'eth1.201' does not match <trunk>.<vlan id>: expected 'eth1.200'"),
    (VLANS, "interfaces.trunk", DELETE, "interfaces.trunk: is required with vlan_ids"),
    (VLANS, "vlan_ids.backup", 300, "vlan_ids.backup: is not a network role in interfaces"),
    (VLANS, "node_vlan_ids", {"server-2": {"cluster": 100}}, "node_vlan_ids.server-2: VLAN id 100 is used by more than one role: cluster, storage"),
    (VLANS, "node_vlan_ids", {"server-9": {"cluster": 201}}, "node_vlan_ids.server-9: 'server-9' is not a node in ip_addresses"),
    (VLANS, "node_vlan_ids", {"server-2": {"cluster": 5000}}, "node_vlan_ids.server-2.cluster: 5000 is not a VLAN id"),
    (VLANS, "interfaces.cluster", "an-interface-name-too-long", "interfaces.cluster: 'an-interface-name-too-long' is not an interface name"),
    # bonds
    (BOND, "bond.mode", "lacp", "bond.mode: 'lacp' is not one of: balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb, balance-alb"),
    (BOND, "bond.primary", "eth3", "bond.primary: 'eth3' is not one of interfaces.bond_members (eth1, eth2)"),
    (BOND, "bond.miimon", -100, "bond.miimon: -100 is negative; timings are milliseconds >= 0"),
    (BOND, "bond.updelay", -200, "bond.updelay: -200 is negative"),
    (BOND, "bond.downdelay", 250, "bond.downdelay: 250 is not a multiple of bond.miimon (100)"),
    (BOND, "bond.miimon", "100ms", "bond.miimon: '100ms' is not a whole number of milliseconds"),
    (BOND, "bond.primary_reselect", "sometimes", "bond.primary_reselect: 'sometimes' is not one of: always, better, failure"),
    (BOND, "interfaces.bond_members", DELETE, "interfaces.bond_members: is required with bond"),
    (BOND, "interfaces.trunk", "eth1", "interfaces.trunk: 'eth1' is a bond member"),
    (BOND, "interfaces.bond_members", ["eth1", "eth1"], "interfaces.bond_members: lists eth1 more than once"),
    (VLANS, "interfaces.bond_members", ["eth1", "eth2"], "interfaces.bond_members: needs a bond section"),
    # server_api and pod networks
    (VLANS, "server_api", "http://192.168.200.1:6443", "server_api: 'http://192.168.200.1:6443' is not an https URL with a port"),
    (VLANS, "server_api", "https://192.168.200.1", "server_api: 'https://192.168.200.1' is not an https URL with a port"),
    (VLANS, "server_api", "https://192.168.200.1:99999", "server_api: 'https://192.168.200.1:99999' is not an https URL with a port"),
    (VLANS, "server_api", "https://192.168.200.1:6443/api", "server_api: 'https://192.168.200.1:6443/api' must be only https://HOST:PORT"),
    (VLANS, "service_cidr", "10.42.128.0/17", "service_cidr: 10.42.128.0/17 overlaps cluster_cidr 10.42.0.0/16"),
    (VLANS, "cluster_cidr", "192.168.0.0/16", "cluster_cidr: 192.168.0.0/16 overlaps the cluster network 192.168.200.0/24"),
    (VLANS, "service_cidr", "192.168.100.0/24", "service_cidr: 192.168.100.0/24 overlaps the storage network 192.168.100.0/24"),
    # DHCP
    (DHCP, "dhcp.server", "192.168.2.254", "dhcp.server: 192.168.2.254 is outside the cluster network 192.168.1.0/24"),
    (DHCP, "dhcp.range_end", "192.168.9.200", "dhcp.range_end: 192.168.9.200 is outside the cluster network 192.168.1.0/24"),
    (DHCP, "dhcp.range_end", "192.168.1.50", "dhcp.range_end: 192.168.1.50 is before range_start 192.168.1.100"),
    (
        DHCP,
        "ip_addresses.agent-1.cluster",
        "192.168.1.150",
        "ip_addresses.agent-1.cluster: 192.168.1.150 is inside the DHCP dynamic range 192.168.1.100-192.168.1.200",
    ),
    (DHCP, "dhcp.server", "192.168.1.150", "dhcp.server: 192.168.1.150 is inside the dynamic range"),
    (DHCP, "ip_addresses.agent-1.cluster", "192.168.1.254", "ip_addresses.agent-1.cluster: 192.168.1.254 is the DHCP server's address"),
    (DHCP, "dhcp.lease_time", "12 hours", "dhcp.lease_time: '12 hours' is not a lease time"),
    (DHCP, "dhcp", DELETE, "dhcp: is required with addressing: dhcp"),
    (DHCP, "mac_addresses.agent-1", DELETE, "mac_addresses.agent-1: is missing: DHCP addressing reserves each node's address by MAC"),
    (DHCP, "addressing", "static", "dhcp: is only used with addressing: dhcp"),
]


@pytest.mark.parametrize(("base", "path", "value", "expected"), CASES, ids=[f"{c[1]}={c[2]!r}"[:60] for c in CASES])
def test_rule(base, path, value, expected):
    lines = problems_of(changed(base, path, value))
    assert any(line.startswith(f"profiles/x.yml: {expected}") for line in lines), lines
    assert len(lines) == len(set(lines)), "a problem is reported twice"


@pytest.mark.parametrize("base", [VLANS, BOND, DHCP], ids=["vlans", "bond", "dhcp"])
def test_bases_are_valid(base):
    validate_profile(copy.deepcopy(base))


def test_every_problem_reported_at_once():
    profile = changed(changed(VLANS, "vlan_id", 1), "ip_addresses.server-2.cluster", "192.168.1.300")
    lines = problems_of(profile)
    assert lines == [
        "profiles/x.yml: vlan_id: unknown key; did you mean 'vlan_ids'?",
        "profiles/x.yml: ip_addresses.server-2.cluster: '192.168.1.300' is not an IPv4 address",
    ]


def test_defaults_filled_and_input_untouched():
    profile = copy.deepcopy(BOND)
    del profile["bond"]["updelay"]
    before = copy.deepcopy(profile)
    normal = validate_profile(profile)
    assert profile == before
    assert normal["addressing"] == "static"
    assert normal["prefix_length"] == 24
    assert normal["cluster_cidr"] == "10.42.0.0/16"
    assert normal["service_cidr"] == "10.43.0.0/16"
    assert normal["bond"]["updelay"] == 0
    assert validate_profile(normal) == normal


def test_mac_addresses_are_lower_case():
    profile = changed(DHCP, "mac_addresses.agent-1", "52:54:00:AB:01:03")
    assert validate_profile(profile)["mac_addresses"]["agent-1"] == "52:54:00:ab:01:03"


def test_unquoted_mac_in_yaml_is_a_string():
    text = """
addressing: dhcp
ip_addresses: {server-1: {cluster: 192.168.1.1}}
interfaces: {cluster: eth1}
dhcp: {server: 192.168.1.254, range_start: 192.168.1.100, range_end: 192.168.1.200}
mac_addresses: {server-1: 52:54:00:01:01:01}
server_api: https://192.168.1.1:6443
"""
    assert parse_profile_text(text)["mac_addresses"]["server-1"] == "52:54:00:01:01:01"


def test_duplicate_yaml_key_is_an_error():
    text = "server_api: https://a:1\nserver_api: https://b:1\n"
    with pytest.raises(ProfileError, match=r"^p.yml: line 2, column 1: not valid YAML: duplicate key 'server_api'"):
        parse_profile_text(text, "p.yml")


def test_broken_yaml_names_line():
    with pytest.raises(ProfileError, match=r"^p.yml: line \d+, column \d+: not valid YAML"):
        parse_profile_text("ip_addresses: {server-1: [", "p.yml")


def test_missing_file_lists_shipped_profiles(tmp_path):
    (tmp_path / "simple.yml").write_text("x: 1\n")
    with pytest.raises(ProfileError, match=r"nope.yml: no such file; shipped profiles: simple$"):
        load_profile("nope", str(tmp_path))


def test_not_a_mapping():
    assert problems_of(["a"]) == ["profiles/x.yml: must be a mapping, got ['a']"]
    assert problems_of(None) == ["profiles/x.yml: must be a mapping, got None"]
