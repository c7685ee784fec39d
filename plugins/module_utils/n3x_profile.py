# Copyright: n3x developers
# MIT License
"""Network profiles: loading, validation and the facts derived from them.

A profile is pure data (profiles/*.yml). ``validate_profile`` checks every rule and
returns a normalised copy with defaults filled in; every problem becomes one
``ProfileProblem`` naming the field path, and all problems are reported together in one
``ProfileError``. Nothing here imports Ansible, so plain pytest exercises it.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import os
import re
import reprlib
import stat
from urllib.parse import urlsplit

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML ships with ansible-core
    yaml = None

ROOT_KEYS = (
    "description",
    "addressing",
    "prefix_length",
    "ip_addresses",
    "interfaces",
    "vlan_ids",
    "node_vlan_ids",
    "bond",
    "dhcp",
    "mac_addresses",
    "server_api",
    "cluster_cidr",
    "service_cidr",
)
REQUIRED_ROOT_KEYS = ("ip_addresses", "interfaces", "server_api")
INTERFACE_STRUCTURE_KEYS = ("trunk", "bond_members")
BOND_KEYS = (
    "mode",
    "primary",
    "miimon",
    "updelay",
    "downdelay",
    "primary_reselect",
    "lacp_rate",
    "transmit_hash_policy",
)
DHCP_KEYS = ("server", "range_start", "range_end", "lease_time")
# The values systemd-networkd accepts in [Bond] (systemd.netdev(5)).
BOND_MODES = (
    "balance-rr",
    "active-backup",
    "balance-xor",
    "broadcast",
    "802.3ad",
    "balance-tlb",
    "balance-alb",
)
BOND_MODES_WITH_PRIMARY = ("active-backup", "balance-tlb", "balance-alb")
PRIMARY_RESELECT_POLICIES = ("always", "better", "failure")
LACP_RATES = ("slow", "fast")
TRANSMIT_HASH_POLICIES = ("layer2", "layer3+4", "layer2+3", "encap2+3", "encap3+4", "vlan+srcmac")
ADDRESSING_MODES = ("static", "dhcp")
DEFAULTS = {
    "description": "",
    "addressing": "static",
    "prefix_length": 24,
    "vlan_ids": {},
    "node_vlan_ids": {},
    "mac_addresses": {},
    "cluster_cidr": "10.42.0.0/16",
    "service_cidr": "10.43.0.0/16",
}
BOND_DEFAULTS = {"mode": "active-backup", "miimon": 100, "updelay": 0, "downdelay": 0}

# Every pattern is used with fullmatch: `$` would also match before a trailing newline.
# A node name is one DNS label (RFC 1123), as hostnames and k3s node names are.
_NODE_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_ROLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")
# Linux (dev_valid_name): at most 15 bytes, not '.' or '..', no '/', ':' or whitespace.
IFNAME_MAX = 15
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_LEASE_TIME = re.compile(r"([0-9]+[smhdw]?|infinite)")
# server_api is written into k3s config files: no whitespace or control character at all.
_URL_TEXT = re.compile(r"[!-~]+")

# A profile file is small: the 1,000-node profile of scripts/bench-core is 63 KiB.
PROFILE_MAX_BYTES = 1024 * 1024
# A structure handed over already parsed (a filter's input) may share sub-structures, as
# YAML aliases make them; counting every value visited bounds the work of copying it.
PROFILE_MAX_VALUES = PROFILE_MAX_BYTES // 2


def one_line(text):
    """text with every line break and control character escaped: one problem, one line."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class ProfileProblem:
    """One problem in a profile: a dotted field path and what is wrong with it."""

    __slots__ = ("field", "message")

    def __init__(self, field, message):
        self.field = field
        self.message = message

    def format(self, source):
        text = f"{source}: {self.field}: {self.message}" if self.field else f"{source}: {self.message}"
        return one_line(text)

    def __repr__(self):
        return f"ProfileProblem({self.field!r}, {self.message!r})"


class ProfileError(Exception):
    """A profile that cannot be used; str() gives one line per problem."""

    def __init__(self, source, problems):
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(p.format(source) for p in self.problems))


def is_ifname(value):
    """Whether value is a Linux interface name (n3x allows a subset of what Linux does)."""
    return isinstance(value, str) and _IFNAME.fullmatch(value) is not None and value not in (".", "..")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _bounded_repr():
    # reprlib stops at a depth and a length: str() of a deep or shared structure would not.
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxdict, shown.maxlist, shown.maxstring, shown.maxother = 3, 6, 6, 60, 60
    return shown


_REPR = _bounded_repr()


def _show(value):
    if isinstance(value, str):
        text = repr(value[:61])
    elif isinstance(value, (dict, list, tuple)):
        text = _REPR.repr(value)
    else:
        text = str(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _suggest(key, known):
    close = difflib.get_close_matches(str(key), known, n=1)
    return f"; did you mean '{close[0]}'?" if close else f" (known keys: {', '.join(known)})"


class _TooBig(Exception):
    pass


def plain(value, budget=None):
    """A copy made of builtin types only (Ansible hands over str and dict subclasses).

    budget: a one-item list, the number of values still allowed; raises _TooBig beyond it.
    """
    if budget is not None:
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooBig
    if isinstance(value, dict):
        return {plain(key, budget): plain(item, budget) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item, budget) for item in value]
    if isinstance(value, bool):
        return bool(value)
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def _ipv4(value):
    """The IPv4Address for a dotted-quad string, else None."""
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        return None


class _Checker:
    def __init__(self):
        self.problems = []

    def add(self, field, message):
        self.problems.append(ProfileProblem(field, message))

    def mapping(self, value, field, required=False):
        """value if it is a mapping; records a problem otherwise."""
        if isinstance(value, dict):
            return value
        if value is None and not required:
            return {}
        self.add(field, f"must be a mapping, got {_show(value)}")
        return None

    def known_keys(self, mapping, field, known):
        for key in mapping:
            if key not in known:
                prefix = f"{field}." if field else ""
                self.add(f"{prefix}{key}", f"unknown key{_suggest(key, known)}")

    def string(self, value, field):
        if isinstance(value, str) and value:
            return value
        self.add(field, f"must be a non-empty string, got {_show(value)}")
        return None

    def ipv4(self, value, field):
        address = _ipv4(value)
        if address is None:
            self.add(field, f"{_show(value)} is not an IPv4 address")
        return address

    def ifname(self, value, field):
        if is_ifname(value):
            return value
        self.add(field, f"{_show(value)} is not an interface name (1-15 characters: letters, digits, '.', '-', '_'; not '.' or '..')")
        return None

    def vlan_id(self, value, field):
        if _is_int(value) and 1 <= value <= 4094:
            return value
        self.add(field, f"{_show(value)} is not a VLAN id (a whole number from 1 to 4094)")
        return None

    def milliseconds(self, value, field):
        if _is_int(value) and value >= 0:
            return value
        if _is_int(value):
            self.add(field, f"{value} is negative; timings are milliseconds >= 0")
        else:
            self.add(field, f"{_show(value)} is not a whole number of milliseconds")
        return None

    def choice(self, value, field, choices):
        if value in choices:
            return value
        self.add(field, f"{_show(value)} is not one of: {', '.join(choices)}")
        return None

    def cidr(self, value, field):
        if not isinstance(value, str) or "/" not in value:
            self.add(field, f"{_show(value)} is not an IPv4 CIDR (like 10.42.0.0/16)")
            return None
        try:
            return ipaddress.IPv4Network(value)
        except ValueError:
            try:
                network = ipaddress.IPv4Network(value, strict=False)
            except ValueError:
                self.add(field, f"{_show(value)} is not an IPv4 CIDR (like 10.42.0.0/16)")
                return None
            self.add(field, f"{_show(value)} has host bits set; did you mean '{network}'?")
            return None


def validate_profile(data, source="profile"):
    """Check a profile (already parsed) and return its normalised copy.

    Raises ProfileError listing every problem, each with its field path.
    """
    check = _Checker()
    try:
        profile = _validate(check, data)
    except _TooBig:
        problem = f"holds more than {PROFILE_MAX_VALUES} values (shared or repeated structures, like YAML aliases?)"
        raise ProfileError(source, [ProfileProblem("", problem)]) from None
    except RecursionError:
        raise ProfileError(source, [ProfileProblem("", "is nested too deeply")]) from None
    if check.problems:
        raise ProfileError(source, check.problems)
    return profile


def _validate(check, data):
    root = check.mapping(data, "", required=True)
    if root is None:
        return None
    check.known_keys(root, "", ROOT_KEYS)
    for key in REQUIRED_ROOT_KEYS:
        if root.get(key) is None:
            check.add(key, "is required")

    profile = copy.deepcopy(DEFAULTS)
    budget = [PROFILE_MAX_VALUES]
    profile.update({k: plain(v, budget) for k, v in root.items() if k in ROOT_KEYS and v is not None})

    if not isinstance(profile["description"], str):
        check.add("description", f"must be a string, got {_show(profile['description'])}")
    check.choice(profile["addressing"], "addressing", ADDRESSING_MODES)
    prefix_length = profile["prefix_length"]
    if not (_is_int(prefix_length) and 1 <= prefix_length <= 30):
        check.add("prefix_length", f"{_show(prefix_length)} is not a prefix length from 1 to 30")
        prefix_length = None

    addresses = _check_addresses(check, profile.get("ip_addresses"))
    nodes = list(addresses) if addresses is not None else []
    roles = _check_interfaces(check, profile, addresses)
    networks = {}
    if addresses is not None and roles is not None and prefix_length is not None:
        networks = _check_role_networks(check, addresses, roles, prefix_length)
    if roles is not None:
        _check_vlans(check, profile, roles, nodes)
        _check_bond(check, profile)
    _check_macs(check, profile, nodes)
    _check_dhcp(check, profile, addresses, networks, nodes)
    _check_server_api(check, profile)
    _check_pod_networks(check, profile, networks)
    return profile


def _check_addresses(check, value):
    """ip_addresses as {node: {role: IPv4Address}}; None when unusable."""
    if value is None:
        return None
    nodes = check.mapping(value, "ip_addresses", required=True)
    if nodes is None:
        return None
    if not nodes:
        check.add("ip_addresses", "names no node")
        return None
    parsed = {}
    for node, roles in nodes.items():
        field = f"ip_addresses.{node}"
        if not isinstance(node, str) or not _NODE_NAME.fullmatch(node):
            check.add(field, f"{_show(node)} is not a node name (lower-case letters, digits and '-', like server-1)")
            continue
        roles = check.mapping(roles, field, required=True)
        if roles is None:
            continue
        if not roles:
            check.add(field, "gives no address")
        parsed[node] = {}
        for role, address in roles.items():
            if not isinstance(role, str) or not _ROLE_NAME.fullmatch(role):
                check.add(f"{field}.{role}", f"{_show(role)} is not a network role name (like cluster or storage)")
                continue
            # An invalid address still counts as present (None) so it is reported once.
            parsed[node][role] = check.ipv4(address, f"{field}.{role}")
    return parsed


def _check_interfaces(check, profile, addresses):
    """The network roles (interfaces keys other than trunk/bond_members); None when unusable."""
    if "interfaces" not in profile:
        return None
    interfaces = check.mapping(profile["interfaces"], "interfaces", required=True)
    if interfaces is None:
        return None
    roles = []
    for key, value in interfaces.items():
        field = f"interfaces.{key}"
        if key == "trunk":
            check.ifname(value, field)
        elif key == "bond_members":
            if not isinstance(value, list) or not value:
                check.add(field, f"must be a list of interface names, got {_show(value)}")
                continue
            for index, member in enumerate(value):
                check.ifname(member, f"{field}[{index}]")
            duplicates = sorted({m for m in value if isinstance(m, str) and value.count(m) > 1})
            if duplicates:
                check.add(field, f"lists {', '.join(duplicates)} more than once")
        elif not isinstance(key, str) or not _ROLE_NAME.fullmatch(key):
            check.add(field, f"unknown key{_suggest(key, ('cluster', 'storage', *INTERFACE_STRUCTURE_KEYS))}")
        elif check.ifname(value, field) is not None:
            roles.append(key)
    if "cluster" not in interfaces:
        check.add("interfaces.cluster", "is required (the interface k3s and flannel use)")

    if addresses is None:
        return roles
    # Every node must have an address for every role, and every role an interface.
    for role in sorted({r for node_roles in addresses.values() for r in node_roles}):
        if role not in interfaces:
            check.add(f"interfaces.{role}", f"is missing: nodes have {role} addresses but no interface carries them")
            continue
        missing = [node for node, node_roles in addresses.items() if role not in node_roles]
        for node in missing:
            check.add(f"ip_addresses.{node}.{role}", f"is missing: the other nodes have a {role} address")
    for role in roles:
        if addresses and not any(role in node_roles for node_roles in addresses.values()):
            if difflib.get_close_matches(role, INTERFACE_STRUCTURE_KEYS, n=1):
                check.add(f"interfaces.{role}", f"unknown key{_suggest(role, INTERFACE_STRUCTURE_KEYS)}")
            else:
                check.add(f"interfaces.{role}", f"no node has a {role} address in ip_addresses")
    return roles


def _check_role_networks(check, addresses, roles, prefix_length):
    """Per role: one common network, unique host addresses. Returns {role: IPv4Network}."""
    networks = {}
    first_nodes = {}
    for role in roles:
        members = [(node, node_roles[role]) for node, node_roles in addresses.items() if node_roles.get(role) is not None]
        if not members:
            continue
        first_node, first_ip = members[0]
        network = ipaddress.IPv4Network(f"{first_ip}/{prefix_length}", strict=False)
        networks[role] = network
        first_nodes[role] = first_node
        seen = {}
        for node, ip in members:
            field = f"ip_addresses.{node}.{role}"
            if ip not in network:
                check.add(field, f"{ip} is outside {network}, the {role} network of {first_node} (prefix_length {prefix_length})")
            elif ip == network.network_address:
                check.add(field, f"{ip} is the network address of {network}")
            elif ip == network.broadcast_address:
                check.add(field, f"{ip} is the broadcast address of {network}")
            if ip in seen:
                check.add(field, f"{ip} is also the {role} address of {seen[ip]}")
            else:
                seen[ip] = node
    ordered = sorted(networks.items())
    for index, (role, network) in enumerate(ordered):
        for other_role, other in ordered[index + 1 :]:
            if network.overlaps(other):
                check.add(f"ip_addresses.{first_nodes[other_role]}.{other_role}", f"the {other_role} network {other} overlaps the {role} network {network}")
    return networks


def _check_vlans(check, profile, roles, nodes):
    interfaces = profile["interfaces"]
    vlan_ids = check.mapping(profile["vlan_ids"], "vlan_ids")
    node_vlan_ids = check.mapping(profile["node_vlan_ids"], "node_vlan_ids")
    trunk = interfaces.get("trunk")
    if vlan_ids is None:
        return
    for role, vlan in vlan_ids.items():
        if role not in roles:
            check.add(f"vlan_ids.{role}", f"is not a network role in interfaces (roles: {', '.join(roles)})")
            continue
        check.vlan_id(vlan, f"vlan_ids.{role}")
    _check_unique_ids(check, vlan_ids, "vlan_ids")
    if vlan_ids and not trunk:
        check.add("interfaces.trunk", "is required with vlan_ids: it names the interface that carries the VLANs")
    for role in roles:
        name = interfaces[role]
        vlan = vlan_ids.get(role)
        if _is_int(vlan) and trunk:
            expected = f"{trunk}.{vlan}"
            if name != expected:
                check.add(f"interfaces.{role}", f"{name!r} does not match <trunk>.<vlan id>: expected {expected!r}")
        elif role not in vlan_ids and isinstance(name, str) and trunk and name.startswith(f"{trunk}."):
            check.add(f"interfaces.{role}", f"{name!r} is a VLAN of the trunk but vlan_ids.{role} is not set")

    if node_vlan_ids is None:
        return
    for node, overrides in node_vlan_ids.items():
        field = f"node_vlan_ids.{node}"
        if node not in nodes:
            check.add(field, f"{_show(node)} is not a node in ip_addresses")
            continue
        overrides = check.mapping(overrides, field, required=True)
        if overrides is None:
            continue
        for role, vlan in overrides.items():
            if role not in vlan_ids:
                check.add(f"{field}.{role}", f"overrides a VLAN that vlan_ids does not define (defined: {', '.join(map(str, vlan_ids)) or 'none'})")
                continue
            if check.vlan_id(vlan, f"{field}.{role}") is not None and is_ifname(trunk):
                _check_derived_ifname(check, f"{trunk}.{vlan}", f"{field}.{role}")
        _check_unique_ids(check, {**vlan_ids, **overrides}, field)


def _check_derived_ifname(check, name, field):
    """A name the generator makes (<trunk>.<id>) must be an interface name too."""
    if len(name.encode()) > IFNAME_MAX:
        check.add(field, f"makes the VLAN interface {name!r} ({len(name.encode())} characters); Linux interface names have at most {IFNAME_MAX}")


def _check_unique_ids(check, ids, field):
    by_id = {}
    for role, vlan in ids.items():
        if _is_int(vlan):
            by_id.setdefault(vlan, []).append(role)
    for vlan, users in sorted(by_id.items()):
        if len(users) > 1:
            check.add(field, f"VLAN id {vlan} is used by more than one role: {', '.join(map(str, users))}")


def _check_bond(check, profile):
    interfaces = profile["interfaces"]
    members = interfaces.get("bond_members")
    if "bond" not in profile:
        if members is not None:
            check.add("interfaces.bond_members", "needs a bond section (mode, primary, miimon, ...)")
        return
    bond = check.mapping(profile["bond"], "bond", required=True)
    if bond is None:
        return
    check.known_keys(bond, "bond", BOND_KEYS)
    for key, value in BOND_DEFAULTS.items():
        bond.setdefault(key, value)
    if members is None:
        check.add("interfaces.bond_members", "is required with bond: it lists the bond's member interfaces")
    if not isinstance(members, list):
        members = []
    trunk = interfaces.get("trunk")
    if not trunk:
        check.add("interfaces.trunk", "is required with bond: it names the bond device (like bond0)")
    elif trunk in members:
        check.add("interfaces.trunk", f"{trunk!r} is a bond member; the trunk must be the bond device itself (like bond0)")
    mode = check.choice(bond["mode"], "bond.mode", BOND_MODES)
    if "primary" in bond:
        primary = bond["primary"]
        if primary not in members:
            check.add("bond.primary", f"{_show(primary)} is not one of interfaces.bond_members ({', '.join(map(str, members))})")
        elif mode is not None and mode not in BOND_MODES_WITH_PRIMARY:
            check.add("bond.primary", f"has no effect in mode {mode}; only {', '.join(BOND_MODES_WITH_PRIMARY)} use a primary")
    if "primary_reselect" in bond:
        check.choice(bond["primary_reselect"], "bond.primary_reselect", PRIMARY_RESELECT_POLICIES)
    if "lacp_rate" in bond:
        check.choice(bond["lacp_rate"], "bond.lacp_rate", LACP_RATES)
    if "transmit_hash_policy" in bond:
        check.choice(bond["transmit_hash_policy"], "bond.transmit_hash_policy", TRANSMIT_HASH_POLICIES)
    miimon = check.milliseconds(bond["miimon"], "bond.miimon")
    for key in ("updelay", "downdelay"):
        delay = check.milliseconds(bond[key], f"bond.{key}")
        if delay is None or miimon is None:
            continue
        if delay and not miimon:
            check.add(f"bond.{key}", f"{delay} needs MII monitoring, but bond.miimon is 0")
        elif miimon and delay % miimon:
            check.add(f"bond.{key}", f"{delay} is not a multiple of bond.miimon ({miimon})")


def _check_macs(check, profile, nodes):
    macs = check.mapping(profile["mac_addresses"], "mac_addresses")
    if macs is None:
        return
    seen = {}
    for node, mac in list(macs.items()):
        field = f"mac_addresses.{node}"
        if node not in nodes:
            check.add(field, f"{_show(node)} is not a node in ip_addresses")
            continue
        if _is_int(mac):
            check.add(field, f'{mac} was read as a number; quote MAC addresses ("52:54:00:...")')
            continue
        normal = mac.lower() if isinstance(mac, str) else None
        if normal is None or not _MAC.fullmatch(normal):
            check.add(field, f"{_show(mac)} is not a MAC address (six hex pairs separated by ':')")
            continue
        if int(normal[:2], 16) & 1:
            check.add(field, f"{mac!r} is a multicast address; a NIC needs a unicast MAC")
            continue
        if normal in seen:
            check.add(field, f"{mac!r} is also the MAC of {seen[normal]}")
            continue
        seen[normal] = node
        macs[node] = normal
    if profile["addressing"] == "dhcp" and nodes:
        for node in nodes:
            if node not in macs:
                check.add(f"mac_addresses.{node}", "is missing: DHCP addressing reserves each node's address by MAC")


def _check_dhcp(check, profile, addresses, networks, nodes):
    addressing = profile["addressing"]
    if "dhcp" not in profile:
        if addressing == "dhcp":
            check.add("dhcp", "is required with addressing: dhcp (server, range_start, range_end, lease_time)")
        return
    if addressing != "dhcp":
        check.add("dhcp", "is only used with addressing: dhcp")
        return
    dhcp = check.mapping(profile["dhcp"], "dhcp", required=True)
    if dhcp is None:
        return
    check.known_keys(dhcp, "dhcp", DHCP_KEYS)
    for key in ("server", "range_start", "range_end"):
        if key not in dhcp:
            check.add(f"dhcp.{key}", "is required")
    dhcp.setdefault("lease_time", "12h")
    lease = dhcp["lease_time"]
    if not isinstance(lease, str) or not _LEASE_TIME.fullmatch(lease):
        check.add("dhcp.lease_time", f"{_show(lease)} is not a lease time (like 12h, 3600, 45m or infinite)")
    parsed = {key: check.ipv4(dhcp[key], f"dhcp.{key}") for key in ("server", "range_start", "range_end") if key in dhcp}
    network = networks.get("cluster")
    if network is None:
        return
    for key, ip in parsed.items():
        if ip is None:
            continue
        if ip not in network:
            check.add(f"dhcp.{key}", f"{ip} is outside the cluster network {network}")
        elif ip in (network.network_address, network.broadcast_address):
            check.add(f"dhcp.{key}", f"{ip} is the network or broadcast address of {network}")
    start, end, server = parsed.get("range_start"), parsed.get("range_end"), parsed.get("server")
    if start is None or end is None:
        return
    if start > end:
        check.add("dhcp.range_end", f"{end} is before range_start {start}")
        return
    if server is not None and start <= server <= end:
        check.add("dhcp.server", f"{server} is inside the dynamic range {start}-{end}")
    for node in nodes:
        ip = (addresses or {}).get(node, {}).get("cluster")
        if ip is None:
            continue
        if start <= ip <= end:
            check.add(f"ip_addresses.{node}.cluster", f"{ip} is inside the DHCP dynamic range {start}-{end}; static leases must lie outside it")
        if server is not None and ip == server:
            check.add(f"ip_addresses.{node}.cluster", f"{ip} is the DHCP server's address")


def _check_server_api(check, profile):
    if "server_api" not in profile:
        return
    url = profile["server_api"]
    if not isinstance(url, str):
        check.add("server_api", f"{_show(url)} is not an https URL with a port (like https://192.168.1.1:6443)")
        return
    try:
        # urlsplit drops tabs and newlines anywhere in a URL: refuse them first.
        parts = urlsplit(url) if _URL_TEXT.fullmatch(url) else None
        port = parts.port if parts else None
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme != "https" or not parts.hostname or port is None:
        check.add("server_api", f"{_show(url)} is not an https URL with a port (like https://192.168.1.1:6443)")
    elif parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        check.add("server_api", f"{url!r} must be only https://HOST:PORT")
    elif not _is_host(parts.hostname):
        check.add("server_api", f"{parts.hostname!r} is not an IP address or a DNS name")


_DNS_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?")


def _is_host(name):
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return len(name) <= 253 and _DNS_NAME.fullmatch(name) is not None


def _check_pod_networks(check, profile, networks):
    cluster_cidr = check.cidr(profile["cluster_cidr"], "cluster_cidr")
    service_cidr = check.cidr(profile["service_cidr"], "service_cidr")
    if cluster_cidr and service_cidr and cluster_cidr.overlaps(service_cidr):
        check.add("service_cidr", f"{service_cidr} overlaps cluster_cidr {cluster_cidr}")
    for field, cidr in (("cluster_cidr", cluster_cidr), ("service_cidr", service_cidr)):
        if cidr is None:
            continue
        for role, network in sorted(networks.items()):
            if cidr.overlaps(network):
                check.add(field, f"{cidr} overlaps the {role} network {network}")


# ---------------------------------------------------------------------------
# Loading


def _yaml_loader():
    """A SafeLoader that rejects duplicate keys and reads 52:54:00:01:01:01 as a string.

    PyYAML follows YAML 1.1, where colon-separated digits are base-60 numbers: an
    unquoted MAC address would silently become an integer.
    """

    # libyaml's parser when PyYAML has it: five times faster on big profiles.
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    # PyYAML calls match() on these: \Z, where $ would also match before a final newline.
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:int",
        re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)\Z"),
        list("-+0123456789"),
    )
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z"),
        list("-+0123456789."),
    )

    def construct_mapping(loader, node, deep=False):
        loader.flatten_mapping(node)
        seen = set()
        for key_node, _value in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, f"unhashable key {key!r}", key_node.start_mark) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader


_LOADER = None


def _refuse_aliases(root):
    """Raise ProfileError's problem text when a node is reached twice (a YAML alias).

    The composed graph holds each anchored node once, however often aliases repeat it, so
    this walk stops at the first repeat: bounded time, where expanding a "billion laughs"
    document is not.
    """
    seen = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            mark = node.start_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}"
            return f"{where}: this node is used again through a YAML alias; profiles allow no aliases (write the value out)"
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack.extend(item for pair in node.value for item in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return None


def parse_profile_text(text, source="profile"):
    """Parse and validate a profile's YAML text (no aliases, at most PROFILE_MAX_BYTES)."""
    global _LOADER
    if _LOADER is None:
        _LOADER = _yaml_loader()
    if len(text) > PROFILE_MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > PROFILE_MAX_BYTES:
        raise ProfileError(source, [ProfileProblem("", _too_large())])
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        problem = _refuse_aliases(node) if node is not None else None
        if problem:
            raise ProfileError(source, [ProfileProblem("", problem)])
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProfileError(source, [ProfileProblem("", f"{where}not valid YAML: {problem}")]) from None
    except RecursionError:
        raise ProfileError(source, [ProfileProblem("", "not valid YAML: nested too deeply")]) from None
    finally:
        loader.dispose()
    return validate_profile(data, source)


def _too_large():
    return f"is larger than {PROFILE_MAX_BYTES // 1024} KiB, the limit for a profile"


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode):
    """Why a file of this mode is no profile file, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    return f"is {kind}, not a profile file (a regular YAML file)"


def read_profile_file(path, source, limit=PROFILE_MAX_BYTES):
    """The text of a regular file of at most limit bytes; ProfileError otherwise.

    Special files are refused before any read (stat, then fstat of a non-blocking open, so
    a FIFO cannot block it and /dev/zero is never read), and reading stops at limit + 1
    bytes, so a file that grows meanwhile cannot make it read without end.
    """

    def fail(message):
        return ProfileError(source, [ProfileProblem("", message)])

    try:
        problem = _not_regular(os.stat(path).st_mode)
        if problem:
            raise fail(problem)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        problem = _not_regular(info.st_mode) or (_too_large() if info.st_size > limit else None)
        if problem:
            raise fail(problem)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise fail(_too_large())
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"is not UTF-8 text (byte {exc.start})") from None


def resolve_profile_path(profile, profiles_dir):
    """A profile name (under profiles_dir) or a path to a YAML file -> path."""
    if not isinstance(profile, str) or not profile:
        raise ProfileError("profile", [ProfileProblem("", "give a profile name (like vlans) or a path to a YAML file")])
    if os.sep in profile or profile.endswith((".yml", ".yaml")):
        return profile
    return os.path.join(profiles_dir, f"{profile}.yml")


def available_profiles(profiles_dir):
    try:
        return sorted(name[:-4] for name in os.listdir(profiles_dir) if name.endswith(".yml"))
    except OSError:
        return []


def display_path(path):
    """The path as the user would write it: relative to the working directory when below it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def load_profile(profile, profiles_dir):
    """Load and validate a profile by name or path. Returns (path, normalised profile)."""
    path = resolve_profile_path(profile, profiles_dir)
    source = display_path(path)
    try:
        text = read_profile_file(path, source)
    except FileNotFoundError:
        names = available_profiles(profiles_dir)
        hint = f"; shipped profiles: {', '.join(names)}" if names else ""
        raise ProfileError(source, [ProfileProblem("", f"no such file{hint}")]) from None
    return path, parse_profile_text(text, source)


# ---------------------------------------------------------------------------
# Facts derived from a valid profile


def profile_nodes(profile):
    return list(profile["ip_addresses"])


def network_roles(profile):
    """Network roles in a stable order: cluster first, then the rest by name."""
    roles = [key for key in profile["interfaces"] if key not in INTERFACE_STRUCTURE_KEYS]
    return sorted(roles, key=lambda role: (role != "cluster", role))


def node_vlan_ids(profile, node):
    """{role: VLAN id} for one node, with its per-node overrides applied."""
    ids = dict(profile["vlan_ids"])
    ids.update(profile["node_vlan_ids"].get(node, {}))
    return ids


def node_interfaces(profile, node):
    """{role: interface name} for one node (per-node VLAN ids rename its VLAN interfaces)."""
    trunk = profile["interfaces"].get("trunk")
    ids = node_vlan_ids(profile, node)
    return {role: (f"{trunk}.{ids[role]}" if role in ids else profile["interfaces"][role]) for role in network_roles(profile)}


def physical_interfaces(profile):
    """The NICs a node needs cabled for this profile, in order (eth1, or the bond members)."""
    interfaces = profile["interfaces"]
    if "bond" in profile:
        return list(interfaces["bond_members"])
    names = []
    trunk = interfaces.get("trunk")
    if trunk and profile["vlan_ids"]:
        names.append(trunk)
    for role in network_roles(profile):
        name = interfaces[role]
        if role in profile["vlan_ids"] or name in names:
            continue
        names.append(name)
    return names


def kernel_modules(profile):
    """Kernel modules the node's network needs loaded."""
    modules = []
    if "bond" in profile:
        modules.append("bonding")
    if profile["vlan_ids"]:
        modules.append("8021q")
    return modules


def server_api_host(profile):
    return urlsplit(profile["server_api"]).hostname


def require_node(profile, node):
    if node not in profile["ip_addresses"]:
        nodes = ", ".join(profile["ip_addresses"])
        raise ProfileError("profile", [ProfileProblem("", f"node {node!r} is not in ip_addresses (nodes: {nodes})")])
