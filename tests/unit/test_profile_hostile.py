"""Hostile profiles are refused in bounded time and memory, with one line naming file and field.

Every call that could hang or grow (alias bombs, special files, deep nesting) runs under
tests/bounded.py: a forked child with a time limit and an address-space limit.
"""

import copy
import os

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_dhcp import dhcp_server_files
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import (
    PROFILE_MAX_BYTES,
    PROFILE_MAX_VALUES,
    ProfileError,
    load_profile,
    parse_profile_text,
    validate_profile,
)
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_render import node_files

from ..bounded import bounded
from .test_profile_validation import BOND, DHCP, VLANS, changed

VALID = "ip_addresses: {server-1: {cluster: 192.168.1.1}}\ninterfaces: {cluster: eth1}\nserver_api: https://192.168.1.1:6443\n"
ALIAS_PROBLEM = "this node is used again through a YAML alias; profiles allow no aliases (write the value out)"


def laughs(indent=""):
    """A billion laughs: nine levels of nine aliases each, 9**9 strings once expanded."""
    lines = [f'{indent}l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        lines.append(f"{indent}l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def refusal(call):
    """The one ProfileError line of call(), run with a 10 s and 1 GiB bound."""
    outcome = bounded(call, seconds=10, memory=1 << 30)
    assert outcome[:2] == ("raised", "ProfileError"), outcome
    return outcome[2]


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("unknown key", laughs()),
        ("known key", VALID + "description:\n" + laughs("  ")),
        ("node addresses", VALID.replace("ip_addresses: {server-1: {cluster: 192.168.1.1}}", "ip_addresses:\n" + laughs("  "))),
    ],
)
def test_alias_bomb_is_refused_in_bounded_time(where, text):
    message = refusal(lambda: parse_profile_text(text, "x.yml"))
    assert message.startswith("x.yml: line "), message
    assert message.endswith(ALIAS_PROBLEM), message


@pytest.mark.parametrize(
    "text",
    [
        VALID + "description: &d hello\ncluster_cidr: *d\n",
        "base: &b {cluster: eth1}\n" + VALID.replace("interfaces: {cluster: eth1}", "interfaces: {<<: *b}"),
        "a: &a [*a]\n",
    ],
    ids=["scalar alias", "merge key", "recursive alias"],
)
def test_every_alias_is_refused(text):
    message = refusal(lambda: parse_profile_text(text, "x.yml"))
    assert message.endswith(ALIAS_PROBLEM), message


def test_shared_structures_handed_over_parsed_are_bounded():
    # A filter's input is already parsed (by Ansible): aliases arrive as shared references.
    level = ["lol"] * 9
    for _ in range(9):
        level = [level] * 9
    message = refusal(lambda: validate_profile({**parse_profile_text(VALID), "description": level}, "vars"))
    assert message == f"vars: holds more than {PROFILE_MAX_VALUES} values (shared or repeated structures, like YAML aliases?)"


def test_deep_nesting_is_one_line():
    for text in ("[" * 999 + "]" * 999, "description: " + "[" * 999 + "]" * 999, "[" * 5000):
        message = refusal(lambda text=text: parse_profile_text(text, "x.yml"))
        assert "\n" not in message, message
        assert message.startswith("x.yml: "), message


@pytest.fixture
def special_files(tmp_path):
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    (tmp_path / "dir.yml").mkdir()
    (tmp_path / "zero.yml").symlink_to("/dev/zero")
    (tmp_path / "to-fifo.yml").symlink_to(fifo)
    return {
        "/dev/zero": "is a character device",
        str(fifo): "is a FIFO",
        str(tmp_path / "dir.yml"): "is a directory",
        str(tmp_path / "zero.yml"): "is a character device",
        str(tmp_path / "to-fifo.yml"): "is a FIFO",
    }


def test_special_files_are_refused_before_reading(special_files):
    for path, kind in special_files.items():
        message = refusal(lambda path=path: load_profile(path, "profiles"))
        assert message == f"{path}: {kind}, not a profile file (a regular YAML file)"


def test_size_limit(tmp_path):
    big = tmp_path / "big.yml"
    big.write_text(VALID + "description: '" + "x" * PROFILE_MAX_BYTES + "'\n")
    assert refusal(lambda: load_profile(str(big), "profiles")) == f"{big}: is larger than 1024 KiB, the limit for a profile"
    assert refusal(lambda: parse_profile_text(big.read_text(), "t.yml")) == "t.yml: is larger than 1024 KiB, the limit for a profile"
    fits = tmp_path / "fits.yml"
    fits.write_text(VALID + "description: '" + "x" * (PROFILE_MAX_BYTES - len(VALID) - 20) + "'\n")
    assert bounded(lambda: load_profile(str(fits), "profiles")[1]["prefix_length"]) == ("returned", 24)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.yml"
    path.write_bytes(VALID.encode() + b"description: caf\xe9\n")
    with pytest.raises(ProfileError, match=r"latin1.yml: is not UTF-8 text \(byte \d+\)$"):
        load_profile(str(path), "profiles")


# Names: full matches only ($ matches before a trailing newline), Linux interface rules.
NAME_CASES = [
    (VLANS, "interfaces.trunk", "..", "interfaces.trunk: '..' is not an interface name"),
    (VLANS, "interfaces.trunk", ".", "interfaces.trunk: '.' is not an interface name"),
    (VLANS, "interfaces.trunk", "eth1\n", "interfaces.trunk: 'eth1\\n' is not an interface name"),
    (VLANS, "interfaces.cluster", "eth1.200\n", "interfaces.cluster: 'eth1.200\\n' is not an interface name"),
    (VLANS, "interfaces.cluster", "eth/1", "interfaces.cluster: 'eth/1' is not an interface name"),
    (VLANS, "interfaces.cluster", "eth 1", "interfaces.cluster: 'eth 1' is not an interface name"),
    (VLANS, "interfaces.cluster", "eth:1", "interfaces.cluster: 'eth:1' is not an interface name"),
    (BOND, "interfaces.bond_members", ["eth1\n", "eth2"], "interfaces.bond_members[0]: 'eth1\\n' is not an interface name"),
    (VLANS, "ip_addresses.server-3\n", {"cluster": "192.168.200.9", "storage": "192.168.100.9"}, "ip_addresses.server-3\\n: 'server-3\\n' is not a node name"),
    (VLANS, "ip_addresses.server-1.cluster\n", "192.168.200.9", "ip_addresses.server-1.cluster\\n: 'cluster\\n' is not a network role name"),
    (DHCP, "mac_addresses.agent-1", "52:54:00:01:01:03\n", "mac_addresses.agent-1: '52:54:00:01:01:03\\n' is not a MAC address"),
    (DHCP, "dhcp.lease_time", "12h\n", "dhcp.lease_time: '12h\\n' is not a lease time"),
    (DHCP, "dhcp.lease_time", "12h\ndhcp-range=1.2.3.4", "dhcp.lease_time: '12h\\ndhcp-range=1.2.3.4' is not a lease time"),
    (VLANS, "server_api", "https://192.168.200.1:6443\n", "server_api: 'https://192.168.200.1:6443\\n' is not an https URL with a port"),
    (VLANS, "server_api", "https://192.168.200.1:6443\nfoo", "server_api: 'https://192.168.200.1:6443\\nfoo' is not an https URL"),
    (VLANS, "server_api", "https://a_b:6443", "server_api: 'a_b' is not an IP address or a DNS name"),
    (VLANS, "ip_addresses.server-1.cluster", "192.168.200.1\n", "ip_addresses.server-1.cluster: '192.168.200.1\\n' is not an IPv4 address"),
    (VLANS, "cluster_cidr", "10.42.0.0/16\n", "cluster_cidr: '10.42.0.0/16\\n' is not an IPv4 CIDR"),
    (BOND, "bond.mode", "active-backup\n", "bond.mode: 'active-backup\\n' is not one of"),
]


@pytest.mark.parametrize(("base", "path", "value", "expected"), NAME_CASES, ids=[f"{c[1]}={c[2]!r}"[:60] for c in NAME_CASES])
def test_names_and_values_full_match(base, path, value, expected):
    with pytest.raises(ProfileError) as caught:
        validate_profile(changed(base, path, value), "profiles/x.yml")
    lines = str(caught.value).splitlines()
    assert any(line.startswith(f"profiles/x.yml: {expected}") for line in lines), lines


def test_derived_vlan_name_over_15_characters_names_the_field():
    profile = copy.deepcopy(VLANS)
    profile["interfaces"] = {"cluster": "enp0s31f6ab.200", "storage": "enp0s31f6ab.100", "trunk": "enp0s31f6ab"}
    validate_profile(profile)  # every name the profile itself writes fits
    profile["node_vlan_ids"] = {"server-2": {"cluster": 2001}}
    with pytest.raises(ProfileError) as caught:
        validate_profile(profile, "profiles/x.yml")
    assert str(caught.value) == (
        "profiles/x.yml: node_vlan_ids.server-2.cluster: makes the VLAN interface 'enp0s31f6ab.2001' (16 characters); Linux interface names have at most 15"
    )


def string_fields(value, path=()):
    """(path, value) of every string in a profile, and ("key", path) of every mapping key."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key), "key"
            yield from string_fields(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_fields(item, (*path, index))
    elif isinstance(value, str):
        yield path, value


def injected(base, path, what):
    profile = copy.deepcopy(base)
    *parents, last = path
    target = profile
    for key in parents:
        target = target[key]
    if what == "key":
        target[f"{last}\nInjected=1"] = target.pop(last)
    else:
        target[last] = f"{target[last]}\nInjected=1"
    return profile


FIELDS = [(name, base, path, what) for name, base in (("vlans", VLANS), ("bond", BOND), ("dhcp", DHCP)) for path, what in string_fields(base)]


@pytest.mark.parametrize(("name", "base", "path", "what"), FIELDS, ids=[f"{f[0]}:{'.'.join(map(str, f[2]))}{':key' if f[3] == 'key' else ''}" for f in FIELDS])
def test_a_newline_in_any_field_is_refused_or_written_nowhere(name, base, path, what):
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")
    profile = injected(base, path, what)
    if path == ("description",) and what != "key":
        # Free text is accepted; it must not reach any generated file.
        normal = validate_profile(profile, "profiles/x.yml")
        nodes = list(normal["ip_addresses"])
        texts = [text for node in nodes for text in node_files(normal, node, "server", servers=nodes[:1]).values()]
        if normal["addressing"] == "dhcp":
            texts.extend(dhcp_server_files(normal).values())
        assert not any("Injected" in text for text in texts)
    else:
        with pytest.raises(ProfileError) as caught:
            validate_profile(profile, "profiles/x.yml")
        lines = str(caught.value).splitlines()
        assert all(line.startswith("profiles/x.yml: ") for line in lines), lines
        assert any(field in line for line in lines), lines
