# Copyright: n3x developers
# MIT License
"""Who else configures a node's interfaces: netplan, NetworkManager, ifupdown, other networkd
files and DHCP clients (issue 17).

Everything here reads the host through a HostView (files under a root directory and an
injected ``run(argv) -> (rc, stdout, stderr)``), so tests run it against trees that mirror
the real files. Each finding is a Claim: which manager, which file or process, which
interface, what it does there and how to resolve it. Nothing here changes the host
(n3x_takeover does, from these claims).

The rules follow the managers' own documentation (bookworm versions):
- systemd.network(5) (systemd 252): .network files are read from /etc, /run,
  /usr/local/lib and /usr/lib (/lib on split-usr) systemd/network; all are sorted by file
  name and processed in lexical order, regardless of their directory; a file in /etc hides
  one of the same name in /run, which hides one in /usr/lib; an empty file or a symlink to
  /dev/null masks; the first file whose [Match] matches an interface is applied and later
  ones are ignored; an empty [Match] matches every interface; a "!" before a list inverts it.
- netplan-generate(8), netplan 0.106: YAML from /lib, /etc and /run/netplan (a file in /run
  shadows the same name in /etc, /etc shadows /lib); rendered to
  /run/systemd/network/10-netplan-ID.network (networkd) or
  /run/NetworkManager/system-connections/netplan-ID.nmconnection (NetworkManager).
- NetworkManager.conf(5), 1.42: conf.d files from /usr/lib, /run, /etc (later override
  earlier; ``key+=`` and ``key-=`` extend or shrink a list); [keyfile] unmanaged-devices with
  the "Device List Format" (interface-name:, mac:, except:, "*"); Debian's [ifupdown]
  managed=false leaves interfaces of /etc/network/interfaces alone. Like
  linux-system-roles/network (defaults/main.yml, __network_provider_current), a running
  NetworkManager.service is what counts as NetworkManager in charge.
- interfaces(5), ifupdown 0.8.41: stanzas auto, allow-*, iface, mapping, rename, source
  (wordexp globs, relative to the including file's directory), source-directory (only
  names matching ^[a-zA-Z0-9_-]+$); patterns /GLOB in auto and allow- lines.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re

NETWORKD_DIRS = ("/etc/systemd/network", "/run/systemd/network", "/usr/local/lib/systemd/network", "/usr/lib/systemd/network", "/lib/systemd/network")
NETPLAN_DIRS = ("/run/netplan", "/etc/netplan", "/lib/netplan")
NETPLAN_NETWORKD_DIR = "/run/systemd/network"
NETPLAN_NM_DIR = "/run/NetworkManager/system-connections"
NM_CONF_DIRS = ("/usr/lib/NetworkManager/conf.d", "/run/NetworkManager/conf.d")
NM_CONF = "/etc/NetworkManager/NetworkManager.conf"
NM_ETC_CONF_DIR = "/etc/NetworkManager/conf.d"
NM_CONNECTION_DIRS = ("/etc/NetworkManager/system-connections", "/run/NetworkManager/system-connections", "/usr/lib/NetworkManager/system-connections")
IFUPDOWN_INTERFACES = "/etc/network/interfaces"
IFUPDOWN_BINARIES = ("/sbin/ifup", "/usr/sbin/ifup")
IFUPDOWN_STATE_DIR = "/run/network"
NETPLAN_BINARIES = ("/usr/sbin/netplan", "/sbin/netplan")
DHCP_CLIENTS = ("dhclient", "dhcpcd", "udhcpc")
# Bigger files are not configuration a manager wrote: refuse to guess rather than read them.
MAX_FILE_BYTES = 1 << 20
MAX_INCLUDE_DEPTH = 8

NETPLAN_DEVICE_TYPES = ("ethernets", "bonds", "bridges", "vlans", "wifis", "modems", "tunnels", "vrfs", "dummy-devices", "virtual-ethernets", "nm-devices")
_SOURCE_DIRECTORY_NAME = re.compile(r"[a-zA-Z0-9_-]+")
_IFUPDOWN_KEYWORDS = ("iface", "mapping", "auto", "source", "source-directory", "rename", "no-auto-down", "no-scripts")


class ClaimError(Exception):
    """A file that cannot be read as the manager would read it (too big, not text)."""


class HostView:
    """The host as the detectors see it: files under root, and commands through run."""

    def __init__(self, root="/", run=None):
        self.root = root
        self._run = run

    def _path(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def read(self, path):
        """Text of a regular file (through symlinks), None when missing or not a file."""
        full = self._path(path)
        try:
            if not os.path.isfile(full):
                return None
            if os.path.getsize(full) > MAX_FILE_BYTES:
                raise ClaimError(f"{path}: over {MAX_FILE_BYTES} bytes, not read")
            with open(full, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ClaimError(f"{path}: not UTF-8 text") from exc

    def read_proc(self, path):
        """A /proc or /sys file (size 0 in stat): bytes or None."""
        try:
            with open(self._path(path), "rb") as handle:
                return handle.read(65536)
        except OSError:
            return None

    def listdir(self, path):
        try:
            return sorted(os.listdir(self._path(path)))
        except OSError:
            return []

    def readlink(self, path):
        try:
            return os.readlink(self._path(path))
        except OSError:
            return None

    def is_symlink(self, path):
        return os.path.islink(self._path(path))

    def is_file(self, path):
        return os.path.isfile(self._path(path))

    def is_dir(self, path):
        return os.path.isdir(self._path(path))

    def exists(self, path):
        return os.path.lexists(self._path(path))

    def mode(self, path):
        """Permission bits of a file (0o644 when it cannot be read)."""
        try:
            return os.stat(self._path(path)).st_mode & 0o7777
        except OSError:
            return 0o644

    def size(self, path):
        try:
            return os.stat(self._path(path)).st_size
        except OSError:
            return None

    def run(self, argv):
        if self._run is None:
            return 127, "", "no command runner"
        return self._run(argv)


@dataclasses.dataclass
class Claim:
    """One manager's hold on one interface: what the refusal message and the take-over use.

    action: what networkd_take_over does about it (None: it cannot; the message says why).
    """

    manager: str
    interface: str
    source: str
    what: str
    resolve: str
    action: str | None = None
    details: dict = dataclasses.field(default_factory=dict)

    def message(self):
        return f"{self.interface}: {self.manager}: {self.source}: {self.what}. Resolve: {self.resolve}"

    @classmethod
    def of(cls, manager, interface, source, what, resolve, action=None, **details):
        return cls(manager, interface, source, what, resolve, action, details)

    def as_dict(self):
        return {"manager": self.manager, "interface": self.interface, "source": self.source, "message": self.message(), "action": self.action, **self.details}


# ------------------------------------------------------------------ links ---------------


def link_facts(host):
    """{name: facts} of the host's links from /sys/class/net and udev's database."""
    links = {}
    for name in host.listdir("/sys/class/net"):
        base = f"/sys/class/net/{name}"
        facts = {"name": name, "exists": True}
        raw = host.read_proc(f"{base}/address")
        facts["mac"] = raw.decode("ascii", "replace").strip().lower() if raw else None
        uevent = (host.read_proc(f"{base}/uevent") or b"").decode("utf-8", "replace")
        values = dict(line.split("=", 1) for line in uevent.splitlines() if "=" in line)
        arphrd = (host.read_proc(f"{base}/type") or b"").strip()
        kind = values.get("DEVTYPE")
        facts["kind"] = kind
        facts["type"] = kind or {b"1": "ether", b"772": "loopback"}.get(arphrd)
        driver = host.readlink(f"{base}/device/driver")
        facts["driver"] = os.path.basename(driver) if driver else None
        ifindex = (host.read_proc(f"{base}/ifindex") or b"").strip().decode("ascii", "replace")
        udev = (host.read_proc(f"/run/udev/data/n{ifindex}") or b"").decode("utf-8", "replace") if ifindex else ""
        props = dict(line[2:].split("=", 1) for line in udev.splitlines() if line.startswith("E:") and "=" in line)
        facts["path"] = props.get("ID_PATH")
        if not facts["driver"]:
            facts["driver"] = props.get("ID_NET_DRIVER")
        links[name] = facts
    return links


# What ethtool reports as the driver of the virtual devices our units create.
_VIRTUAL_DRIVERS = {"vlan": "802.1Q VLAN Support", "bond": "bonding"}


def planned_link(name, kind=None, mac=None):
    """Facts of an interface our units create that may not exist yet (a VLAN: its parent's
    MAC; a bond: its first member's). A virtual device has no udev ID_PATH ("")."""
    return {"name": name, "exists": False, "mac": mac, "kind": kind, "type": kind, "driver": _VIRTUAL_DRIVERS.get(kind), "path": ""}


# ------------------------------------------------------------------ networkd -------------


def parse_unit(text):
    """[(section, key, value)] of a systemd unit file (comments, continuation lines)."""
    entries, section, pending = [], None, ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if "=" in line and section is not None:
            key, value = line.split("=", 1)
            entries.append((section, key.strip(), value.strip()))
    return entries


def _glob_list(values, actual):
    """systemd's match of a whitespace-separated glob list ("!" inverts); None: unknown value."""
    patterns, invert = [], False
    for value in values:
        if value == "":
            patterns, invert = [], False
            continue
        if value.startswith("!"):
            invert, value = True, value[1:]
        patterns.extend(value.split())
    if not patterns:
        return True
    if actual is None:
        return None
    # A device without the property ("") matches no pattern (systemd's strv_fnmatch_or_empty).
    hit = actual != "" and any(fnmatch.fnmatchcase(actual, pattern) for pattern in patterns)
    return not hit if invert else hit


def _mac_list(values, actual):
    macs = []
    for value in values:
        if value == "":
            macs = []
            continue
        macs.extend(_normal_mac(mac) for mac in value.split())
    if not macs:
        return True
    if actual is None:
        return None
    return actual.lower() in macs


def _normal_mac(mac):
    mac = mac.lower()
    if "." in mac:  # AABB.CCDD.EEFF
        digits = mac.replace(".", "")
        return ":".join(digits[i : i + 2] for i in range(0, 12, 2))
    return mac.replace("-", ":")


_GLOB_MATCH_KEYS = {"Name": "name", "OriginalName": "name", "Type": "type", "Kind": "kind", "Driver": "driver", "Path": "path"}
_MAC_MATCH_KEYS = {"MACAddress": "mac", "PermanentMACAddress": "mac"}


def network_file_matches(entries, link):
    """Does a .network file's [Match] select this link? True, False or None (cannot tell).

    None when a condition depends on something not read here (Host=, Virtualization=,
    Property=, SSID= ...) or on a property of a link that does not exist yet.
    """
    values = {}
    for section, key, value in entries:
        if section == "Match":
            values.setdefault(key, []).append(value)
    results = []
    for key, given in values.items():
        if key in _GLOB_MATCH_KEYS:
            results.append(_glob_list(given, link.get(_GLOB_MATCH_KEYS[key])))
        elif key in _MAC_MATCH_KEYS:
            results.append(_mac_list(given, link.get(_MAC_MATCH_KEYS[key])))
        else:
            results.append(None)
    return all_of(results)


def all_of(results):
    """Every condition holds: False when one fails, None when one cannot be told, else True."""
    results = list(results)
    if False in results:
        return False
    return None if None in results else True


def networkd_files(host, suffixes=(".network", ".netdev")):
    """{file name: path} of the files networkd uses: a name in an earlier directory hides it
    in later ones, masked names (empty, or a symlink to /dev/null) are left out."""
    chosen = {}
    for directory in NETWORKD_DIRS:
        for name in host.listdir(directory):
            if not name.endswith(suffixes) or name in chosen:
                continue
            chosen[name] = f"{directory}/{name}"
    return {name: path for name, path in sorted(chosen.items()) if not _masked(host, path)}


def _masked(host, path):
    target = host.readlink(path)
    if target is not None and os.path.normpath(target) == "/dev/null":
        return True
    return host.size(path) == 0


def our_units(files, unit_dir):
    """{file name: text} of our .network/.netdev units in unit_dir."""
    units = {}
    for item in files:
        directory, name = os.path.split(item["path"])
        if os.path.normpath(directory) == os.path.normpath(unit_dir) and name.endswith((".network", ".netdev")):
            units[name] = item["content"]
    return units


def unit_interfaces(units):
    """{interface: (our .network file name, kind)} of our units (the [Match] Name= of each
    .network; the kind of a device our .netdev creates)."""
    kinds = {}
    for name, text in units.items():
        if name.endswith(".netdev"):
            entries = parse_unit(text)
            device = next((v for s, k, v in entries if s == "NetDev" and k == "Name"), None)
            kind = next((v for s, k, v in entries if s == "NetDev" and k == "Kind"), None)
            if device:
                kinds[device] = kind
    found = {}
    for name, text in sorted(units.items()):
        if name.endswith(".network"):
            for section, key, value in parse_unit(text):
                if section == "Match" and key == "Name":
                    for interface in value.split():
                        found[interface] = (name, kinds.get(interface))
    return found


def unit_parents(units):
    """{virtual device: the interface it sits on} from our .network files (VLAN=, Bond=)."""
    parents = {}
    for name, text in sorted(units.items()):
        if not name.endswith(".network"):
            continue
        entries = parse_unit(text)
        interface = next((v for s, k, v in entries if s == "Match" and k == "Name"), None)
        for section, key, value in entries:
            if section == "Network" and key in ("VLAN", "Bond"):
                parents.setdefault(value, interface)
    return parents


def networkd_claims(host, units, unit_dir, interfaces, links, generated_marker, skip=()):
    """Other .network/.netdev files networkd would apply to our interfaces before ours.

    units: {name: text} of our units; interfaces: unit_interfaces(units); skip: paths
    another detector reports (the files netplan renders).
    """
    unit_dir = os.path.normpath(unit_dir)
    present = networkd_files(host)
    # Our files as they will be: ours replace theirs of the same name, our stale ones go.
    for name, path in list(present.items()):
        if os.path.dirname(path) == unit_dir and (host.read(path) or "").startswith(generated_marker):
            del present[name]
    for name in units:
        present[name] = f"{unit_dir}/{name}"
    ordered = sorted(present.items())
    claims = []
    for interface, (our_file, _kind) in interfaces.items():
        for name, path in ordered:
            if name == our_file:
                break
            if path in skip or name in units or not name.endswith(".network"):
                continue
            entries = parse_unit(host.read(path) or "")
            matched = network_file_matches(entries, links[interface])
            if matched is not False:
                others = sorted(n for n, facts in links.items() if n not in interfaces and n != "lo" and network_file_matches(entries, facts) is not False)
                claims.append(_networkd_claim(interface, name, path, our_file, matched, others))
    for our_file, text in sorted(units.items()):
        device = _netdev_name(text) if our_file.endswith(".netdev") else None
        if not device:
            continue
        for name, path in ordered:
            if name == our_file:
                break
            if path in skip or name in units or not name.endswith(".netdev"):
                continue
            if _netdev_name(host.read(path) or "") == device:
                claims.append(
                    Claim.of(
                        "systemd-networkd",
                        device,
                        path,
                        f"creates {device} and sorts before {our_file}, so networkd creates the device from it",
                        f"remove {path}, or set networkd_take_over: true",
                        action=_networkd_action(path),
                        path=path,
                    )
                )
    return claims


def _netdev_name(text):
    return next((v for s, k, v in parse_unit(text) if s == "NetDev" and k == "Name"), None)


def _networkd_action(path):
    return "move" if path.startswith("/etc/") else "mask"


def _networkd_claim(interface, name, path, our_file, matched, others):
    how = "matches" if matched else "may match (its [Match] has conditions not checked here)"
    what = f"{how} {interface} and sorts before {our_file}, so networkd applies it instead of ours"
    if others:
        what += f"; it also matches {', '.join(others)}"
    action = None if others else _networkd_action(path)
    if action == "move":
        resolve = f"move {path} away (or narrow its [Match] so it leaves {interface} alone), or set networkd_take_over: true (it is backed up and moved aside)"
    elif action == "mask":
        resolve = f"mask it with a symlink /etc/systemd/network/{name} -> /dev/null, or set networkd_take_over: true (which does that)"
    else:
        resolve = f"narrow its [Match] so it leaves {interface} alone (networkd_take_over will not touch a file other interfaces use)"
    return Claim.of("systemd-networkd", interface, path, what, resolve, action=action, path=path)


# ------------------------------------------------------------------ netplan -------------


def netplan_installed(host):
    return any(host.exists(path) for path in NETPLAN_BINARIES)


def netplan_yaml_files(host):
    """[(path, text)] of the netplan YAML files netplan reads, in its order (by file name)."""
    chosen = {}
    for directory in NETPLAN_DIRS:
        for name in host.listdir(directory):
            if name.endswith(".yaml") and name not in chosen:
                chosen[name] = f"{directory}/{name}"
    return [(path, host.read(path)) for _name, path in sorted(chosen.items())]


def _yaml_load(text, path):
    try:
        import yaml
    except ImportError as exc:
        raise ClaimError(f"{path}: cannot read netplan YAML without PyYAML (python3-yaml, which netplan.io depends on)") from exc

    class _NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise ClaimError(f"{path}: YAML aliases are not read here")
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=_NoAliases)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ClaimError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc


def netplan_definitions(text, path):
    """[(device type, id, settings)] of one netplan YAML file, and its default renderer."""
    data = _yaml_load(text, path) or {}
    network = data.get("network") if isinstance(data, dict) else None
    if not isinstance(network, dict):
        return [], None
    renderer = network.get("renderer")
    found = []
    for device_type in NETPLAN_DEVICE_TYPES:
        section = network.get(device_type)
        if not isinstance(section, dict):
            continue
        section_renderer = section.get("renderer") if isinstance(section.get("renderer"), str) else None
        for device_id, settings in section.items():
            if device_id == "renderer" or not isinstance(settings, dict):
                continue
            found.append((device_type, str(device_id), settings, settings.get("renderer") or section_renderer))
    return found, renderer


def netplan_def_matches(device_id, settings, link):
    """Does a netplan definition configure this link? True, False or None (cannot tell)."""
    match = settings.get("match")
    if not isinstance(match, dict):
        return device_id == link["name"]
    results = []
    for key, value in match.items():
        if key == "name":
            results.append(fnmatch.fnmatchcase(link["name"], str(value)))
        elif key == "macaddress":
            results.append(None if link.get("mac") is None else link["mac"] == str(value).lower())
        elif key == "driver":
            drivers = value if isinstance(value, list) else [value]
            results.append(None if link.get("driver") is None else any(fnmatch.fnmatchcase(link["driver"], str(d)) for d in drivers))
        else:
            results.append(None)
    return all_of(results)


def netplan_claims(host, interfaces, links):
    """Netplan definitions of our interfaces, with the files netplan renders from them.

    interfaces: {interface: our .network file}. Returns (claims, generated paths).
    """
    claims, generated = [], set()
    if not netplan_installed(host):
        return claims, generated
    files = [(path, *netplan_definitions(text, path)) for path, text in netplan_yaml_files(host) if text is not None]
    everything = [definition for _path, definitions, _renderer in files for definition in definitions]
    for path, definitions, renderer in files:
        for device_type, device_id, settings, own_renderer in definitions:
            for interface in interfaces:
                if netplan_def_matches(device_id, settings, links[interface]) is False:
                    continue
                if (own_renderer or renderer or "networkd") == "NetworkManager":
                    rendered = f"{NETPLAN_NM_DIR}/netplan-{device_id}.nmconnection"
                    effect = f"rendered for NetworkManager as {rendered}"
                else:
                    rendered = f"{NETPLAN_NETWORKD_DIR}/10-netplan-{device_id}.network"
                    effect = f"rendered as {rendered}, which networkd applies before {interfaces[interface]}"
                generated.update({rendered, f"{NETPLAN_NETWORKD_DIR}/10-netplan-{device_id}.netdev"})
                what = f"network.{device_type}.{device_id} configures {interface}{_summary(settings)}; {effect}"
                others = _netplan_other_users(device_id, settings, links, interfaces)
                users = _netplan_dependents(everything, device_id, interfaces)
                if others or users:
                    action = None
                    what += f"; it also matches {', '.join(others)}" if others else f"; {', '.join(users)} depend on it"
                    resolve = (
                        f"edit {path} so that no definition configures {interface}, then run 'netplan generate' "
                        "(networkd_take_over does not rewrite a definition other interfaces use)"
                    )
                else:
                    action = "netplan"
                    resolve = (
                        f"remove {device_id} from {path} and run 'netplan generate', or set networkd_take_over: true "
                        "(the file is backed up, then rewritten without it or moved aside)"
                    )
                claims.append(Claim.of("netplan", interface, path, what, resolve, action=action, path=path, netplan_id=device_id, netplan_type=device_type))
    return claims, generated


def _summary(settings):
    keys = [k for k in ("dhcp4", "dhcp6", "addresses", "interfaces", "link", "id") if k in settings]
    return f" ({', '.join(keys)})" if keys else ""


def _netplan_other_users(device_id, settings, links, interfaces):
    if not isinstance(settings.get("match"), dict):
        return []
    return sorted(n for n, facts in links.items() if n not in interfaces and n != "lo" and netplan_def_matches(device_id, settings, facts) is not False)


def _netplan_dependents(definitions, device_id, interfaces):
    """Definitions outside the profile that use this one (a VLAN's link, a bond's member)."""
    users = []
    for device_type, other_id, settings, _renderer in definitions:
        if other_id == device_id or other_id in interfaces:
            continue
        refs = {settings["link"]} if isinstance(settings.get("link"), str) else set()
        if isinstance(settings.get("interfaces"), list):
            refs.update(str(i) for i in settings["interfaces"])
        if device_id in refs:
            users.append(f"network.{device_type}.{other_id}")
    return users


# ------------------------------------------------------------------ NetworkManager ------


NM_BINARIES = ("/usr/sbin/NetworkManager", "/sbin/NetworkManager")


def nm_state(host):
    """(running, enabled) of NetworkManager.service; no command runs when it is not installed."""
    if not any(host.exists(path) for path in NM_BINARIES):
        return False, False
    running = host.run(["systemctl", "is-active", "--quiet", "NetworkManager.service"])[0] == 0
    enabled = host.run(["systemctl", "is-enabled", "--quiet", "NetworkManager.service"])[0] == 0
    return running, enabled


def nmcli_split(line):
    """Fields of one `nmcli -t` line (':' separates, '\\:' and '\\\\' escape)."""
    fields, current, escaped = [], [], False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def parse_keyfile(text):
    """{section: {key: value}} of a GLib key file (NetworkManager's conf and connections);
    ``key+=`` and ``key-=`` are kept as such for nm_conf()."""
    sections, current = {}, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is not None and "=" in line:
            key, value = line.split("=", 1)
            current[key.strip()] = value.strip()
    return sections


def nm_conf_files(host):
    """The configuration files NetworkManager reads, in its order (NetworkManager.conf(5))."""
    names = {}
    for directory in NM_CONF_DIRS:
        for name in host.listdir(directory):
            if name.endswith(".conf"):
                names[name] = f"{directory}/{name}"
    for name in host.listdir(NM_ETC_CONF_DIR):
        if name.endswith(".conf"):
            names[name] = f"{NM_ETC_CONF_DIR}/{name}"
    # /usr/lib and /run first, then NetworkManager.conf, then /etc/conf.d; a name in /etc or
    # /run hides the same name in /usr/lib.
    system = [(n, p) for n, p in sorted(names.items()) if not p.startswith(NM_ETC_CONF_DIR)]
    local = [(n, p) for n, p in sorted(names.items()) if p.startswith(NM_ETC_CONF_DIR)]
    return [p for _n, p in system] + [NM_CONF] + [p for _n, p in local]


def _split_spec_list(value):
    return [item.strip() for item in re.split(r"(?<!\\)[,;]", value) if item.strip()]


def nm_conf_value(host, section, key):
    """A list-valued NetworkManager setting after every file (key, key+=, key-=)."""
    values = None
    for path in nm_conf_files(host):
        text = host.read(path)
        if text is None:
            continue
        entries = parse_keyfile(text).get(section, {})
        if key in entries:
            values = _split_spec_list(entries[key])
        if key + "+" in entries:
            values = (values or []) + _split_spec_list(entries[key + "+"])
        if key + "-" in entries:
            drop = set(_split_spec_list(entries[key + "-"]))
            values = [v for v in (values or []) if v not in drop]
    return values


def nm_spec_matches(specs, link):
    """NetworkManager's Device List Format applied to a link (True/False)."""
    positive, negative = False, False
    only_negative = bool(specs) and all(s.startswith("except:") for s in specs)
    for spec in specs:
        exclude = spec.startswith("except:")
        body = spec[len("except:") :] if exclude else spec
        if body == "*":
            hit = True
        elif body.startswith("interface-name:="):
            hit = link["name"] == body[len("interface-name:=") :]
        elif body.startswith("interface-name:"):
            pattern = body[len("interface-name:") :].lstrip("~")
            hit = fnmatch.fnmatchcase(link["name"], pattern)
        elif body.startswith("mac:"):
            hit = link.get("mac") == body[4:].lower()
        elif ":" not in body or re.fullmatch(r"([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}", body):
            hit = link["name"] == body or link.get("mac") == body.lower()
        else:
            hit = False
        if hit:
            negative = negative or exclude
            positive = positive or not exclude
    if negative:
        return False
    return positive or only_negative


def nm_unmanaged_by_config(host, link):
    specs = nm_conf_value(host, "keyfile", "unmanaged-devices") or []
    return nm_spec_matches(specs, link)


def nm_connection_files(host):
    found = []
    for directory in NM_CONNECTION_DIRS:
        for name in host.listdir(directory):
            if name.endswith(".nmconnection"):
                found.append(f"{directory}/{name}")
    return found


def nm_connection_applies(sections, link):
    """Could this connection profile activate on the link (by name, MAC or type alone)?"""
    connection = sections.get("connection", {})
    if connection.get("autoconnect", "true").lower() in ("false", "no", "0"):
        return False
    name = connection.get("interface-name")
    if name:
        return name == link["name"]
    match = sections.get("match", {}).get("interface-name")
    if match:
        return nm_spec_matches([f"interface-name:{p}" for p in _split_spec_list(match)], link)
    mac = sections.get("ethernet", {}).get("mac-address")
    if mac:
        return link.get("mac") == mac.lower()
    return connection.get("type") in ("ethernet", "802-3-ethernet") and link.get("type") == "ether"


def nm_claims(host, interfaces, links, netplan_generated):
    """NetworkManager's hold on our interfaces: a device it manages now (it runs), or one
    it would manage at the next boot with a connection that applies (enabled, not running)."""
    running, enabled = nm_state(host)
    if not (running or enabled):
        return []
    claims = []
    if running:
        rc, out, _err = host.run(["nmcli", "-t", "-f", "DEVICE,TYPE,STATE,CONNECTION", "device", "status"])
        devices = {}
        if rc == 0:
            for line in out.splitlines():
                fields = nmcli_split(line)
                if len(fields) == 4:
                    devices[fields[0]] = fields[1:]
        files = _nm_active_files(host)
        for interface in interfaces:
            # "connected (externally)": NetworkManager only watches a device another manager set
            # up (our VLANs and bonds once networkd created them); it configures nothing.
            if interface not in devices or devices[interface][1].startswith("unmanaged") or "(externally)" in devices[interface][1]:
                continue
            _type, state, connection = devices[interface]
            source = "NetworkManager.service"
            what = f"manages {interface} (state {state}"
            if connection:
                what += f", connection {connection!r}"
                if files.get(connection):
                    source = files[connection]
                    what += f" from {source}"
            what += ")"
            claims.append(_nm_claim(interface, source, what, running=True))
        return claims
    for interface in interfaces:
        link = links.get(interface) or planned_link(interface)
        if nm_unmanaged_by_config(host, link) or _ifupdown_hides_from_nm(host, interface):
            continue
        for path in nm_connection_files(host):
            if path in netplan_generated:
                continue
            text = host.read(path)
            if text is not None and nm_connection_applies(parse_keyfile(text), link):
                name = parse_keyfile(text).get("connection", {}).get("id", os.path.basename(path))
                claims.append(
                    _nm_claim(
                        interface, path, f"connection {name!r} would configure {interface} when NetworkManager (enabled, not running) starts", running=False
                    )
                )
    return claims


def _nm_claim(interface, source, what, running):
    return Claim.of(
        "NetworkManager",
        interface,
        source,
        what,
        f"mark {interface} unmanaged in a conf.d file ([keyfile] unmanaged-devices+=interface-name:{interface}) and run 'nmcli general reload conf', "
        "or set networkd_take_over: true (which does that)",
        action="nm-unmanage",
        running=running,
    )


def _nm_active_files(host):
    rc, out, _err = host.run(["nmcli", "-t", "-f", "NAME,FILENAME", "connection", "show"])
    found = {}
    if rc == 0:
        for line in out.splitlines():
            fields = nmcli_split(line)
            if len(fields) == 2 and fields[1]:
                found[fields[0]] = fields[1]
    return found


def _ifupdown_hides_from_nm(host, interface):
    """Debian's [ifupdown] managed=false: NetworkManager leaves interfaces ifupdown configures."""
    managed = None
    for path in nm_conf_files(host):
        text = host.read(path)
        if text is not None:
            managed = parse_keyfile(text).get("ifupdown", {}).get("managed", managed)
    plugins = nm_conf_value(host, "main", "plugins") or []
    if "ifupdown" not in plugins or (managed or "false").lower() == "true":
        return False
    return any(s.kind == "iface" and interface in s.names for s in ifupdown_stanzas(host))


# ------------------------------------------------------------------ ifupdown ------------


@dataclasses.dataclass
class Stanza:
    """One stanza of an interfaces(5) file: its kind, the names it lists, its lines."""

    path: str
    kind: str
    names: list
    first: int
    last: int
    text: str


def parse_interfaces(text, path):
    """[Stanza] of one interfaces(5) file; line numbers start at 1."""
    stanzas, current = [], None
    logical = []
    pending, start = "", None
    for number, raw in enumerate(text.splitlines(), 1):
        if pending:
            line = pending + raw
        else:
            line, start = raw, number
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        pending = ""
        logical.append((start, number, line))
    for first, last, line in logical:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            if current is not None and stripped.startswith("#"):
                continue
            continue
        words = stripped.split()
        keyword = words[0]
        if keyword in _IFUPDOWN_KEYWORDS or keyword.startswith("allow-"):
            kind = "auto" if keyword == "allow-auto" else keyword
            names = words[1:]
            if keyword == "iface":
                names = words[1:2]
            current = Stanza(path, kind, names, first, last, line + "\n")
            stanzas.append(current)
            if keyword not in ("iface", "mapping"):
                current = None
        elif current is not None:
            current.last = last
            current.text += line + "\n"
    return stanzas


def _expand_source(host, pattern, base_dir):
    """Files a `source` line names: a path or shell glob, relative to the including file."""
    if not pattern.startswith("/"):
        pattern = os.path.join(base_dir, pattern)
    directory, name = os.path.split(pattern)
    if not any(c in name for c in "*?["):
        return [pattern] if host.is_file(pattern) else []
    if any(c in directory for c in "*?["):
        raise ClaimError(f"source {pattern}: globs in directory names are not followed here")
    return [f"{directory}/{n}" for n in host.listdir(directory) if fnmatch.fnmatchcase(n, name) and not n.startswith(".") and host.is_file(f"{directory}/{n}")]


def ifupdown_stanzas(host, path=IFUPDOWN_INTERFACES, depth=0, seen=None):
    """Every stanza ifupdown reads, following source and source-directory (interfaces(5))."""
    seen = set() if seen is None else seen
    if depth > MAX_INCLUDE_DEPTH or path in seen:
        return []
    seen.add(path)
    text = host.read(path)
    if text is None:
        return []
    found = []
    base_dir = os.path.dirname(path)
    for stanza in parse_interfaces(text, path):
        if stanza.kind == "source":
            for pattern in stanza.names:
                for included in _expand_source(host, pattern, base_dir):
                    found.extend(ifupdown_stanzas(host, included, depth + 1, seen))
        elif stanza.kind == "source-directory":
            for directory in stanza.names:
                directory = directory if directory.startswith("/") else os.path.join(base_dir, directory)
                for name in host.listdir(directory):
                    if _SOURCE_DIRECTORY_NAME.fullmatch(name) and host.is_file(f"{directory}/{name}"):
                        found.extend(ifupdown_stanzas(host, f"{directory}/{name}", depth + 1, seen))
        else:
            found.append(stanza)
    return found


def ifupdown_installed(host):
    return any(host.exists(path) for path in IFUPDOWN_BINARIES)


def _names_interface(stanza, interface, links):
    for name in stanza.names:
        if name.startswith("/"):
            variable, value = name[1:].split("/", 1) if name.count("/") > 1 else ("", name[1:])
            value = value.split("=", 1)[0].split("/", 1)[0]
            if not variable and fnmatch.fnmatchcase(interface, value):
                return True
            if variable == "mac" and (links.get(interface) or {}).get("mac") == value.lower():
                return True
        elif name.split("=", 1)[0] == interface:
            return True
    return False


def ifupdown_claims(host, interfaces, links):
    """ifupdown stanzas for our interfaces: one claim per file and interface."""
    if not ifupdown_installed(host):
        return []
    stanzas = ifupdown_stanzas(host)
    claims = []
    by_file = {}
    for stanza in stanzas:
        for interface in interfaces:
            if stanza.kind == "mapping":
                hit = any(fnmatch.fnmatchcase(interface, p) for p in stanza.names)
            else:
                hit = stanza.kind in ("auto", "iface", "rename") or stanza.kind.startswith("allow-")
                hit = hit and _names_interface(stanza, interface, links)
            if hit:
                by_file.setdefault((stanza.path, interface), []).append(stanza)
    for (path, interface), found in by_file.items():
        lines = "; ".join(f"line {s.first}: {s.text.splitlines()[0].strip()}" for s in found)
        mapped = [s for s in found if s.kind in ("mapping", "rename") or any(n.startswith("/") for n in s.names)]
        up = ifupdown_is_up(host, interface)
        what = f"configures {interface} for ifupdown ({lines})" + ("; ifupdown has it up now" if up else "")
        if mapped:
            action = None
            resolve = f"remove the {mapped[0].kind} of {interface} from {path} by hand (networkd_take_over does not rewrite mappings, renames or patterns)"
        else:
            action = "ifupdown"
            resolve = (
                f"remove these lines from {path} (and 'ifdown {interface}' first), "
                "or set networkd_take_over: true (the file is backed up, the lines commented out)"
            )
        start = "hotplug" if any(s.kind == "allow-hotplug" for s in found) else "auto" if any(s.kind == "auto" for s in found) else None
        claims.append(
            Claim.of("ifupdown", interface, path, what, resolve, action=action, path=path, lines=[[s.first, s.last] for s in found], up=up, start=start)
        )
    return claims


def ifupdown_is_up(host, interface):
    """Has ifupdown brought the interface up? ifupdown 0.8.41 lists each one it did in
    /run/network/ifstate as IFACE=LOGICAL (later versions keep a ifstate.IFACE per interface)."""
    for line in (host.read(f"{IFUPDOWN_STATE_DIR}/ifstate") or "").splitlines():
        if line.split("=", 1)[0].strip() == interface:
            return True
    text = host.read(f"{IFUPDOWN_STATE_DIR}/ifstate.{interface}")
    return bool(text and text.strip())


# ------------------------------------------------------------------ DHCP clients --------

# Options that take a value, so that the word after them is not an interface name.
_DHCLIENT_ARGS = {
    "-p", "-e", "-cf", "-df", "-lf", "-pf", "-sf", "-s", "-g", "-D", "-C",
    "--timeout", "--decline-wait-time", "--address-prefix-len", "--dad-wait-time", "--prefix-len-hint",
}  # fmt: skip
_DHCPCD_ARGS = {
    "-c", "-e", "-f", "-h", "-i", "-j", "-l", "-m", "-o", "-r", "-s", "-t", "-u", "-v", "-y", "-z",
    "-C", "-F", "-I", "-O", "-Q", "-S", "-W", "-X", "-Z",
    "--script", "--env", "--config", "--hostname", "--vendorclassid", "--logfile", "--leasetime", "--metric", "--option", "--request",
    "--inform", "--timeout", "--userclass", "--vendor", "--reboot", "--nohook", "--fqdn", "--clientid", "--nooption", "--require",
    "--static", "--whitelist", "--blacklist", "--destination", "--allowinterfaces", "--denyinterfaces",
}  # fmt: skip


def dhcp_client_interfaces(argv):
    """(client, [interfaces] or None for every interface) of a DHCP client's argv, else None."""
    if not argv:
        return None
    first = argv[0]
    if first.startswith("dhcpcd:"):
        # dhcpcd 9 sets its process titles: "dhcpcd: [manager] [ip4] [ip6]", "dhcpcd: eth1 [ip4]",
        # "dhcpcd: [privileged proxy] eth1 [ip4]", "dhcpcd: [BPF ARP] eth1 192.0.2.1".
        words = " ".join([first[len("dhcpcd:") :], *argv[1:]]).split()
        names, in_bracket = [], False
        for word in words:
            if word.startswith("["):
                in_bracket = not word.endswith("]")
                continue
            if in_bracket:
                in_bracket = not word.endswith("]")
                continue
            if not re.fullmatch(r"[0-9a-fA-F.:/]+", word) or re.fullmatch(r"[a-zA-Z]", word):
                names.append(word)
        return "dhcpcd", names or None
    name = os.path.basename(first)
    args = argv[1:]
    if name == "busybox" and args and args[0] == "udhcpc":
        name, args = "udhcpc", args[1:]
    if name not in DHCP_CLIENTS:
        return None
    if name == "udhcpc":
        interface = "eth0"
        for index, arg in enumerate(args):
            if arg in ("-i", "--interface") and index + 1 < len(args):
                interface = args[index + 1]
            elif arg.startswith("--interface="):
                interface = arg.split("=", 1)[1]
            elif arg.startswith("-i") and len(arg) > 2:
                interface = arg[2:]
        return "udhcpc", [interface]
    takes_value = _DHCLIENT_ARGS if name == "dhclient" else _DHCPCD_ARGS
    names, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            skip = arg in takes_value
            continue
        names.append(arg)
    return name, names or None


def process_unit(cgroup_text):
    """The systemd unit (or scope) a process runs in, from /proc/PID/cgroup."""
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[0] == "0":
            return os.path.basename(parts[2].rstrip("/")) or None
    return None


def dhcp_processes(host):
    """[{pid, client, interfaces (None: all), unit, argv}] of the DHCP clients running."""
    found = []
    for entry in host.listdir("/proc"):
        if not entry.isdigit():
            continue
        raw = host.read_proc(f"/proc/{entry}/cmdline")
        if not raw:
            continue
        argv = [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0")]
        parsed = dhcp_client_interfaces(argv)
        if parsed is None:
            continue
        unit = process_unit((host.read_proc(f"/proc/{entry}/cgroup") or b"").decode("utf-8", "replace"))
        found.append({"pid": int(entry), "client": parsed[0], "interfaces": parsed[1], "unit": unit, "argv": argv})
    return found


# Units whose DHCP clients their manager stops when it lets go of the interface.
_OWNER_UNITS = {"NetworkManager.service": "NetworkManager", "networking.service": "ifupdown"}


def dhcp_owner(unit):
    if unit in _OWNER_UNITS:
        return _OWNER_UNITS[unit]
    if unit and unit.startswith("ifup@") and unit.endswith(".service"):
        return "ifupdown"
    return None


def _unit_runs(host, unit, pid):
    """Is pid the main process of this service (so the service starts it again at boot)?"""
    if not unit or not unit.endswith(".service"):
        return False
    rc, out, _err = host.run(["systemctl", "show", "--property=MainPID", "--value", unit])
    return rc == 0 and out.strip() == str(pid)


def dhcp_claims(host, interfaces):
    """DHCP clients on our interfaces, one claim per client (dhclient forks: the processes of
    one client, unit and interfaces are one). A client its manager (ifupdown,
    NetworkManager) runs goes when that manager lets go; one started by hand is stopped; one
    that a service of its own runs (it would come back at boot) or that also serves other
    interfaces is left to the admin."""
    clients = {}
    for proc in dhcp_processes(host):
        key = (proc["client"], tuple(proc["interfaces"] or ()), proc["interfaces"] is None, proc["unit"])
        clients.setdefault(key, []).append(proc["pid"])
    claims = []
    for (client, served, every, unit), pids in clients.items():
        owner = dhcp_owner(unit)
        for interface in interfaces:
            if not every and interface not in served:
                continue
            label = f"pid {pids[0]}" if len(pids) == 1 else f"pids {', '.join(map(str, pids))}"
            what = f"{client} ({label}, {unit or 'no unit'}) runs on {'every interface' if every else ', '.join(served)}"
            if owner:
                what += f"; {owner} started it"
            if every or any(name not in interfaces for name in served):
                action = None
                resolve = f"stop it or configure it to leave {interface} alone (networkd_take_over never stops a client that serves other interfaces)"
            elif not owner and any(_unit_runs(host, unit, pid) for pid in pids):
                action = None
                resolve = f"stop and disable its service ('systemctl disable --now {unit}'), which would start it again at boot"
            else:
                action = "stop-dhcp"
                resolve = f"stop it (kill {' '.join(map(str, pids))}{', or let ' + owner + ' go' if owner else ''}), or set networkd_take_over: true"
            claims.append(Claim.of("DHCP client", interface, label, what, resolve, action=action, pids=pids, owner=owner))
    return claims


# ------------------------------------------------------------------ the connection ------


def parse_proc_net_tcp(text, ipv6=False):
    """{socket inode: local address} of the established sockets in /proc/net/tcp{,6}."""
    found = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "01":
            continue
        address = fields[1].split(":")[0]
        found[fields[9]] = _decode_address(address, ipv6)
    return found


def _decode_address(hexaddr, ipv6):
    raw = bytes.fromhex(hexaddr)
    if not ipv6:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    flat = b"".join(words)
    if flat[:12] == b"\0" * 10 + b"\xff\xff":
        return ".".join(str(b) for b in flat[12:])
    return ":".join(flat[i : i + 2].hex() for i in range(0, 16, 2))


def connection_addresses(host, pid, ssh_connection=None):
    """Local addresses of the SSH connection this process runs under.

    SSH_CONNECTION when the environment still has it (not after sudo); else the established
    sockets of the nearest sshd ancestor (readable as root).
    """
    if ssh_connection:
        parts = ssh_connection.split()
        if len(parts) == 4:
            return {parts[2]}
    sockets = {}
    for name, ipv6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        raw = host.read_proc(name)
        if raw:
            sockets.update(parse_proc_net_tcp(raw.decode("ascii", "replace"), ipv6))
    seen = set()
    while pid and pid > 1 and pid not in seen:
        seen.add(pid)
        status = (host.read_proc(f"/proc/{pid}/status") or b"").decode("utf-8", "replace")
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("Name", "").strip() == "sshd":
            found = set()
            for fd in host.listdir(f"/proc/{pid}/fd"):
                target = host.readlink(f"/proc/{pid}/fd/{fd}") or ""
                match = re.fullmatch(r"socket:\[(\d+)\]", target)
                if match and match.group(1) in sockets:
                    found.add(sockets[match.group(1)])
            if found:
                return found
        try:
            pid = int(fields.get("PPid", "0").strip())
        except ValueError:
            return set()
    return set()


def address_interfaces(ip_json_text, addresses):
    """Interfaces holding any of these addresses (from `ip -j addr show`)."""
    try:
        links = json.loads(ip_json_text or "[]")
    except ValueError:
        return []
    names = []
    for link in links if isinstance(links, list) else []:
        for info in link.get("addr_info", []):
            if info.get("local") in addresses and link.get("ifname") not in names:
                names.append(link["ifname"])
    return names


def connection_interfaces(host, pid, ssh_connection=None):
    """The interfaces Ansible's SSH connection comes in through ([] when not over SSH)."""
    addresses = connection_addresses(host, pid, ssh_connection)
    if not addresses:
        return []
    rc, out, _err = host.run(["ip", "-j", "addr", "show"])
    return address_interfaces(out, addresses) if rc == 0 else []


# ------------------------------------------------------------------ all of it -----------


def find_claims(host, files, unit_dir, generated_marker):
    """Every other manager's claim on the interfaces our units configure: [Claim]."""
    units = our_units(files, unit_dir)
    ours = unit_interfaces(units)
    links = link_facts(host)
    parents = unit_parents(units)
    for name, (_file, kind) in ours.items():
        parent = links.get(parents.get(name, ""), {})
        links.setdefault(name, planned_link(name, kind, parent.get("mac")))
    interfaces = {name: our_file for name, (our_file, _kind) in ours.items()}
    claims, generated = netplan_claims(host, interfaces, links)
    claims += networkd_claims(host, units, unit_dir, ours, links, generated_marker, skip=generated)
    claims += nm_claims(host, interfaces, links, generated)
    claims += ifupdown_claims(host, interfaces, links)
    claims += dhcp_claims(host, interfaces)
    return claims
