# Copyright: n3x developers
# MIT License
"""Take a node's interfaces over from the managers that claim them, and give them back.

From the claims of n3x_network_claims: by default refuse, one message per claim, changing
nothing. With take_over, for each claim:

- NetworkManager: a conf.d file ([keyfile] unmanaged-devices+=interface-name:...; the ``+=``
  keeps other files' unmanaged devices, NetworkManager.conf(5)) for every interface of the
  profile, then ``nmcli general reload conf``;
- netplan: the YAML file backed up, then rewritten without the definition (or moved aside
  when nothing else is left), then ``netplan generate`` (never ``netplan apply``, which would
  touch every interface netplan knows);
- ifupdown: ``ifdown`` (or stopping ifup@IFACE.service) while the stanza is still there,
  then the file backed up and the stanza's lines commented out;
- another .network/.netdev file before ours: moved aside from /etc, masked from /run and
  /usr/lib by a same-named symlink to /dev/null in /etc/systemd/network (systemd.network(5));
- a DHCP client left running on the interface: stopped (SIGTERM).

Every change is written in a record (STATE_DIR/record.json), with the originals under
STATE_DIR/backup/, so that give_back() restores them exactly. The interface Ansible is
connected through is touched only when the profile names it and take_over_connection says
so. Commands run through an injected ``run(argv)``; files live under ``root`` (tests use a
directory tree).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import diffs as file_diffs
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_network_claims import HostView, dhcp_processes, parse_interfaces

STATE_DIR = "/var/lib/n3x/networkd-takeover"
RECORD = "record.json"
NM_DROPIN = "/etc/NetworkManager/conf.d/90-n3x-unmanaged.conf"
NETWORKD_ETC = "/etc/systemd/network"
COMMENT = "#n3x# "
RECORD_FORMAT = 1


class TakeoverError(Exception):
    """Refused or failed; the message says which file or step and what to do."""


def sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Node(HostView):
    """The node as take-over and give-back change it: files under root, commands through run."""

    def __init__(self, run, root="/", state_dir=STATE_DIR):
        super().__init__(root, run)
        self.state_dir = state_dir

    def path(self, path):
        return self._path(path)

    def lexists(self, path):
        return self.exists(path)

    def stat(self, path):
        return os.stat(self.path(path))

    def _safe_dir(self, directory):
        """Create directory and its missing parents (0755). In the state directory, which n3x
        manages, no component may be a symlink."""
        full, state = self.path(directory), self.path(self.state_dir)
        if full == state or full.startswith(state + os.sep):
            self.check_state_dir()
            probe = full
            while probe != state:
                if os.path.islink(probe):
                    raise TakeoverError(f"{probe} is a symlink; not following it")
                probe = os.path.dirname(probe)
        os.makedirs(full, 0o755, exist_ok=True)

    def write(self, path, text, mode=0o644, uid=None, gid=None):
        """Atomically, beside the target (a reader never sees half a file)."""
        directory = os.path.dirname(path)
        self._safe_dir(directory)
        handle, temporary = tempfile.mkstemp(dir=self.path(directory), prefix=".n3x-")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.chmod(temporary, mode)
            if uid is not None and os.geteuid() == 0:
                os.chown(temporary, uid, gid)
            os.replace(temporary, self.path(path))
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise

    def remove(self, path):
        os.unlink(self.path(path))

    def symlink(self, target, path):
        self._safe_dir(os.path.dirname(path))
        os.symlink(target, self.path(path))

    # -------------------------------------------------------------- record and backups --

    def check_state_dir(self):
        """Refuse a state directory reached through a symlink, before anything changes."""
        probe = self.path(self.state_dir)
        while probe != os.path.dirname(probe) and probe != os.path.normpath(self.root):
            if os.path.islink(probe):
                raise TakeoverError(f"{probe} is a symlink; not following it")
            probe = os.path.dirname(probe)

    def record_path(self):
        return f"{self.state_dir}/{RECORD}"

    def backup_path(self, path):
        return f"{self.state_dir}/backup{path}"

    def load_record(self):
        text = self.read(self.record_path())
        if text is None:
            return {"format": RECORD_FORMAT, "files": {}}
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise TakeoverError(f"{self.record_path()}: not the JSON n3x wrote; restore the files from {self.state_dir}/backup by hand") from exc
        if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
            raise TakeoverError(f"{self.record_path()}: unknown record format")
        return record

    def save_record(self, record):
        self._safe_dir(self.state_dir)
        os.chmod(self.path(self.state_dir), 0o700)
        self.write(self.record_path(), json.dumps(record, indent=1, sort_keys=True) + "\n", mode=0o600)

    def backup(self, path, record):
        """Keep the original of path once (a later take-over keeps the first original)."""
        entry = record["files"].get(path)
        if entry and entry.get("backup"):
            return entry
        text = self.read(path)
        info = self.stat(path)
        backup = self.backup_path(path)
        self.write(backup, text, mode=0o600)
        entry = {"backup": backup, "mode": info.st_mode & 0o7777, "uid": info.st_uid, "gid": info.st_gid, "original_sha256": sha256(text)}
        record["files"][path] = entry
        return entry


# ------------------------------------------------------------------ file edits ----------


def netplan_without(text, ids, backup):
    """(new text or None to move the file aside) of a netplan YAML without these ids."""
    import yaml

    data = yaml.safe_load(text) or {}
    network = data.get("network", {})
    for device_type, device_id in ids:
        section = network.get(device_type, {})
        section.pop(device_id, None)
        if not [k for k in section if k != "renderer"]:
            network.pop(device_type, None)
    left = [k for k in network if k not in ("version", "renderer")]
    if not left:
        return None
    names = ", ".join(device_id for _t, device_id in ids)
    header = f"# n3x.cluster (networkd_take_over) took {names} over from this file; the original is {backup}.\n"
    return header + yaml.safe_dump(data, default_flow_style=False, sort_keys=False)


def interfaces_without(text, path, interfaces, backup):
    """interfaces(5) text with the stanzas of these interfaces commented out (COMMENT)."""
    lines = text.splitlines(keepends=True)
    doomed = {}
    for stanza in parse_interfaces(text, path):
        named = [n for n in stanza.names if n.split("=", 1)[0] in interfaces]
        if not named:
            continue
        if stanza.kind == "iface" or len(named) == len(stanza.names):
            replacement = None
        else:
            keyword = stanza.text.split()[0]
            replacement = " ".join([keyword, *(n for n in stanza.names if n.split("=", 1)[0] not in interfaces)]) + "\n"
        doomed[stanza.first] = (stanza.last, replacement)
    out, number, previous = [], 1, None
    while number <= len(lines):
        if number in doomed:
            last, replacement = doomed[number]
            names = ", ".join(sorted(interfaces))
            if previous != number - 1:
                out.append(f"{COMMENT}n3x.cluster (networkd_take_over) took {names} over; the original is {backup}:\n")
            previous = last
            out.extend(COMMENT + line if line.strip() else line for line in lines[number - 1 : last])
            if replacement:
                out.append(replacement)
            number = last + 1
        else:
            out.append(lines[number - 1])
            number += 1
    return "".join(out)


def nm_dropin(interfaces):
    specs = ";".join(f"interface-name:{name}" for name in sorted(interfaces))
    return (
        "# n3x.cluster (networkd_take_over): systemd-networkd configures these interfaces; NetworkManager\n"
        "# leaves them alone. '+=' keeps the unmanaged devices of other files (NetworkManager.conf(5)).\n"
        f"[keyfile]\nunmanaged-devices+={specs}\n"
    )


# ------------------------------------------------------------------ the plan ------------


class Plan:
    """What take-over would do: refusals (messages), or its steps in order."""

    def __init__(self):
        self.refusals = []
        self.warnings = []
        self.ifdown = []  # interfaces ifupdown holds up now
        self.nm_interfaces = set()  # NetworkManager leaves these alone (the drop-in)
        self.nm_running = False
        self.edits = {}  # path -> {"manager", "how": rewrite|move|mask|create, "text", ...}
        self.netplan_generate = False
        self.dhcp = []  # pids of DHCP clients to stop
        self.ifupdown_start = {}  # interface -> how ifupdown brings it up: hotplug or auto

    @property
    def changes(self):
        return bool(self.ifdown or self.edits or self.dhcp)


def make_plan(claims, interfaces, connected, take_over, take_over_connection, view, node, record, nm=(False, False)):
    """The plan for these claims. interfaces: every interface of our units; connected: the
    interfaces Ansible's connection comes through; record: the earlier take-overs';
    nm: (running, enabled) of NetworkManager."""
    plan = Plan()
    if not claims:
        return plan
    touched = sorted({c.interface for c in claims} & set(connected))
    if not take_over:
        plan.refusals = [c.message() for c in claims]
        plan.refusals += [f"{name}: it carries this Ansible connection; taking it over would also need networkd_take_over_connection: true" for name in touched]
        return plan
    plan.refusals = [c.message() for c in claims if c.action is None]
    for name in touched:
        if take_over_connection:
            plan.warnings.append(f"{name}: taking over the interface Ansible is connected through (networkd_take_over_connection); the connection may drop")
        else:
            plan.refusals.append(
                f"{name}: Ansible is connected through {name}, which the profile names and another manager claims; taking it over "
                "reconfigures it and may cut this connection. Set networkd_take_over_connection: true to go ahead "
                "(and reach the node another way if it does)"
            )
    netplan_ids, ifupdown_names = {}, {}
    plan.ifupdown_start = {}
    for claim in claims:
        path = claim.details.get("path")
        if claim.action in ("netplan", "ifupdown", "move", "mask") and view.is_symlink(path):
            plan.refusals.append(
                f"{claim.interface}: {path} is a symlink; move the {claim.manager} configuration aside by hand (n3x edits no file through a symlink)"
            )
        elif claim.action == "nm-unmanage":
            plan.nm_interfaces.add(claim.interface)
            plan.nm_running = plan.nm_running or claim.details.get("running", False)
        elif claim.action == "netplan":
            netplan_ids.setdefault(path, set()).add((claim.details["netplan_type"], claim.details["netplan_id"]))
        elif claim.action == "ifupdown":
            ifupdown_names.setdefault(path, set()).add(claim.interface)
            if claim.details.get("start"):
                plan.ifupdown_start[claim.interface] = claim.details["start"]
            if claim.interface not in plan.ifdown and (claim.details.get("up") or ifup_unit_running(node, claim.interface)):
                plan.ifdown.append(claim.interface)
        elif claim.action == "move":
            plan.edits[path] = {"manager": claim.manager, "how": "move", "text": None}
        elif claim.action == "mask":
            plan.edits[f"{NETWORKD_ETC}/{os.path.basename(path)}"] = {"manager": claim.manager, "how": "mask", "text": None, "masks": path}
        elif claim.action == "stop-dhcp":
            plan.dhcp.extend(pid for pid in claim.details["pids"] if pid not in plan.dhcp)
    if plan.refusals:
        return plan
    for path, ids in sorted(netplan_ids.items()):
        new = netplan_without(view.read(path), sorted(ids), node.backup_path(path))
        plan.edits[path] = {
            "manager": "netplan",
            "how": "move" if new is None else "rewrite",
            "text": new,
            "names": sorted(f"{t}.{i}" for t, i in ids),
            "mode": view.mode(path),
        }
        plan.netplan_generate = True
    for path, names in sorted(ifupdown_names.items()):
        plan.edits[path] = {
            "manager": "ifupdown",
            "how": "rewrite",
            "text": interfaces_without(view.read(path), path, names, node.backup_path(path)),
            "names": sorted(names),
        }
    if plan.nm_interfaces or (any(nm) and plan.changes and not set(interfaces) <= set(record.get("nm_interfaces", []))):
        # Every interface of the profile: NetworkManager would otherwise take the VLANs and
        # bonds networkd creates, or (after a reboot) a NIC ifupdown no longer lists.
        # Interfaces of earlier take-overs stay listed.
        plan.nm_running = plan.nm_running or nm[0]
        plan.nm_interfaces = set(interfaces) | set(record.get("nm_interfaces", []))
        entry = record["files"].get(NM_DROPIN)
        current = view.read(NM_DROPIN)
        if current is not None and (entry is None or sha256(current) != entry.get("sha256")):
            plan.refusals.append(f"{NM_DROPIN} exists and is not the one n3x wrote; merge it by hand (or remove it)")
        plan.edits[NM_DROPIN] = {"manager": "NetworkManager", "how": "create", "text": nm_dropin(plan.nm_interfaces)}
    return plan


def ifup_unit_running(node, interface):
    """Is ifupdown's hotplug unit bringing the interface up (or holding it up) now?"""
    _rc, out, _err = node.run(["systemctl", "is-active", f"ifup@{interface}.service"])
    return out.strip() in ("active", "activating", "reloading")


def _diff(dest, path, label, text=None, mode=0o644):
    """One Ansible diff entry: path becoming text (None: removed), shown as n3x_files shows
    its own files - no text for a file others may not read (netplan's may hold Wi-Fi keys)."""
    rel = path.lstrip("/")
    items = [] if text is None else [{"path": os.path.join(dest, rel), "content": text, "mode": f"{mode:04o}"}]
    entries = file_diffs(dest, items, [rel]) or [{"prepared": ""}]
    return [{"prepared": f"{path} ({label})\n" + entry["prepared"]} for entry in entries]


def plan_diffs(plan, dest):
    """Ansible diff entries of the take-over's file changes."""
    diffs = []
    for path, edit in sorted(plan.edits.items()):
        label = f"{edit['manager']}: {edit['how']}"
        if edit["how"] == "mask":
            diffs.append({"prepared": f"{path} ({label}): becomes a symlink to /dev/null, which masks {edit['masks']}\n"})
        elif edit["how"] == "move":
            diffs.extend(_diff(dest, path, label + f", kept in {STATE_DIR}/backup"))
        else:
            diffs.extend(_diff(dest, path, label, edit["text"], edit.get("mode", 0o644)))
    return diffs


def describe(plan):
    """One line per take-over step, for the module result."""
    steps = [f"ifdown {name} (ifupdown)" for name in plan.ifdown]
    for path, edit in sorted(plan.edits.items()):
        if edit["how"] == "mask":
            steps.append(f"mask {edit['masks']} with {path} -> /dev/null")
        elif edit["how"] == "move":
            steps.append(f"back up and move aside {path} ({edit['manager']})")
        elif edit["how"] == "create":
            steps.append(f"write {path} (NetworkManager leaves {', '.join(sorted(plan.nm_interfaces))} alone)")
        else:
            steps.append(f"back up and rewrite {path} without {', '.join(edit['names'])} ({edit['manager']})")
    if plan.netplan_generate:
        steps.append("netplan generate")
    steps.extend(f"stop DHCP client pid {pid}" for pid in plan.dhcp)
    return steps


# ------------------------------------------------------------------ take over -----------


class Steps:
    """Runs commands on the node, keeping the list for the result; a failing one that must
    succeed stops with its error."""

    def __init__(self, node):
        self.node = node
        self.commands = []

    def __call__(self, argv, must=True):
        rc, out, err = self.node.run(argv)
        self.commands.append(" ".join(argv))
        if rc != 0 and must:
            raise TakeoverError(f"{' '.join(argv)} failed (rc {rc}): {(err or out).strip()}")


def take_over(plan, node, clock=time.monotonic, sleep=time.sleep):
    """Carry out a plan without refusals. Returns the commands run."""
    step = Steps(node)

    node.check_state_dir()
    record = node.load_record()
    # ifupdown lets go first, while its stanza still tells ifdown what to undo.
    for name in plan.ifdown:
        if ifup_unit_running(node, name):
            step(["systemctl", "stop", f"ifup@{name}.service"])
        else:
            step(["ifdown", "--force", name], must=False)
    for path, edit in sorted(plan.edits.items()):
        if edit["how"] == "mask":
            node.symlink("/dev/null", path)
            record["files"][path] = {"now": "masked", "masks": edit["masks"], "manager": edit["manager"]}
        elif edit["how"] == "create":
            node.write(path, edit["text"], mode=0o644)
            record["files"][path] = {"now": "created", "sha256": sha256(edit["text"]), "manager": edit["manager"]}
            record["nm_interfaces"] = sorted(plan.nm_interfaces)
        else:
            entry = node.backup(path, record)
            entry["manager"] = edit["manager"]
            if edit["manager"] == "ifupdown":
                # How ifupdown brought each one up, to do the same when giving it back.
                record["ifupdown_start"] = {
                    **record.get("ifupdown_start", {}),
                    **{n: plan.ifupdown_start[n] for n in edit["names"] if n in plan.ifupdown_start},
                }
            if edit["how"] == "move":
                node.remove(path)
                entry.update(now="moved", sha256=None)
            else:
                node.write(path, edit["text"], mode=entry["mode"], uid=entry["uid"], gid=entry["gid"])
                entry.update(now="rewritten", sha256=sha256(edit["text"]))
        # After each change: an interrupted take-over still leaves the record of it.
        node.save_record(record)
    if plan.nm_interfaces and plan.nm_running:
        step(["nmcli", "general", "reload", "conf"])
    if plan.netplan_generate:
        step(["netplan", "generate"])
        if plan.nm_running:
            step(["nmcli", "connection", "reload"])
    stop_dhcp_clients(node, plan.dhcp, step, clock, sleep)
    return step.commands


def stop_dhcp_clients(node, pids, step, clock, sleep, timeout=5.0):
    """SIGTERM each client still running (its manager's take-over may have ended it), then
    wait until all are gone."""
    remaining = [p["pid"] for p in dhcp_processes(node) if p["pid"] in pids]
    for pid in remaining:
        step(["kill", "-TERM", str(pid)], must=False)
    deadline = clock() + timeout
    while remaining and clock() < deadline:
        sleep(0.1)
        remaining = [p["pid"] for p in dhcp_processes(node) if p["pid"] in pids]
    if remaining:
        raise TakeoverError(f"DHCP client still running {timeout:.0f} s after SIGTERM: {', '.join(map(str, remaining))}")


# ------------------------------------------------------------------ give back -----------


def give_back_plan(node):
    """(steps, refusals, record): what give_back() would restore."""
    record = node.load_record()
    steps, refusals = [], []
    for path, entry in sorted(record["files"].items()):
        now = entry.get("now")
        current = None if node.is_symlink(path) else node.read(path)
        if now == "masked":
            if node.readlink(path) != "/dev/null":
                refusals.append(f"{path}: no longer the mask n3x made; remove it by hand if it should go")
            steps.append(("unmask", path, entry))
        elif now == "moved":
            if node.lexists(path):
                refusals.append(f"{path}: a new file is there since n3x moved it aside; the original is {entry['backup']}")
            steps.append(("restore", path, entry))
        elif now in ("created", "rewritten"):
            if current is None or sha256(current) != entry["sha256"]:
                refusals.append(
                    f"{path}: changed since n3x wrote it; remove it by hand"
                    if now == "created"
                    else f"{path}: changed since n3x rewrote it; the original is {entry['backup']}"
                )
            steps.append(("delete" if now == "created" else "restore", path, entry))
        if entry.get("backup") and node.read(entry["backup"]) is None:
            refusals.append(f"{path}: its backup {entry['backup']} is missing")
    return steps, refusals, record


def give_back_diffs(steps, node):
    diffs = []
    for kind, path, entry in steps:
        label = f"{entry.get('manager', '')}: {kind}"
        if kind == "unmask":
            diffs.append({"prepared": f"{path} ({label}): the symlink to /dev/null goes\n"})
        elif kind == "delete":
            diffs.extend(_diff(node.root, path, label))
        else:
            diffs.extend(_diff(node.root, path, label, node.read(entry["backup"]) or "", entry["mode"]))
    return diffs


def give_back(steps, record, node):
    """Restore every file of the record; returns (commands, managers given back)."""
    commands = []
    managers = set()
    for kind, path, entry in steps:
        managers.add(entry.get("manager"))
        if kind in ("unmask", "delete"):
            node.remove(path)
        else:
            text = node.read(entry["backup"])
            if sha256(text) != entry["original_sha256"]:
                raise TakeoverError(f"{entry['backup']}: not the original n3x kept; restore {path} by hand")
            node.write(path, text, mode=entry["mode"], uid=entry["uid"], gid=entry["gid"])
    if "netplan" in managers:
        rc, out, err = node.run(["netplan", "generate"])
        commands.append("netplan generate")
        if rc != 0:
            raise TakeoverError(f"netplan generate failed (rc {rc}): {(err or out).strip()}")
    return commands, managers


def hand_back(node, record, devices, physical):
    """After give_back(): let networkd drop the interfaces, hand each to its manager again.

    devices: the virtual devices our units created (deleted); physical: the NICs our units
    configured (their addresses flushed, then networkd reconfigures them from whatever file
    matches now - netplan's again - or leaves them to NetworkManager and ifupdown).
    """
    step = Steps(node)

    for device in devices:
        step(["ip", "link", "delete", device], must=False)
    for name in physical:
        step(["ip", "address", "flush", "dev", name, "scope", "global"], must=False)
    step(["networkctl", "reload"])
    if physical:
        step(["networkctl", "reconfigure", *physical], must=False)
    if record.get("nm_interfaces") and node.run(["systemctl", "is-active", "--quiet", "NetworkManager.service"])[0] == 0:
        # Without the drop-in NetworkManager decides again as it did before the take-over.
        step(["nmcli", "general", "reload", "conf"])
    for name, start in sorted(record.get("ifupdown_start", {}).items()):
        # As at boot, without waiting for a DHCP server that may not answer: allow-hotplug
        # through udev's unit (ifup --allow=hotplug), auto as networking.service would
        # (ifup; the unit stays, so that the dhclient it leaves keeps running).
        if start == "hotplug":
            step(["systemctl", "--no-block", "start", f"ifup@{name}.service"], must=False)
        else:
            step(["systemd-run", "--no-block", "--remain-after-exit", f"--unit=n3x-give-back-ifup-{name}", "ifup", name], must=False)
    return step.commands


def forget(node, record):
    """Remove the record and the backups (once everything is restored)."""
    for entry in record["files"].values():
        if entry.get("backup") and node.lexists(entry["backup"]):
            node.remove(entry["backup"])
    if node.exists(node.record_path()):
        node.remove(node.record_path())
    backup_root = node.path(f"{node.state_dir}/backup")
    if os.path.isdir(backup_root) and not os.path.islink(backup_root):
        # Only the directories the backups needed, bottom up, and only when empty.
        for directory, _dirs, _files in sorted(os.walk(backup_root), key=lambda item: -len(item[0])):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
    with contextlib.suppress(OSError):
        os.rmdir(node.path(node.state_dir))
