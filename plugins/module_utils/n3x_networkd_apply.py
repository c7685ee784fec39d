# Copyright: n3x developers
# MIT License
"""Put a node's generated network in place on the node itself, in one step.

Install the units (``n3x_files``), and only when one changed: load the kernel modules,
delete the devices whose ``.netdev`` changed (networkd does not change a bond's mode or a
VLAN id in place), make sure networkd runs, reload it and reconfigure the profile's NICs.
Then, changed or not, wait (bounded) until the profile's interfaces reach their states.
Before all of it, other managers' claims on the interfaces (n3x_network_claims) stop the run
or, with take_over, are taken over (n3x_takeover); give_back() undoes the take-over.

One module run does all of it: each run costs seconds on a small board or a TCG guest
(importing Ansible's module_utils alone takes 1.5 s of CPU there). Kept free of the
profile code, so the module sent to the node stays small. Commands run through an
injected ``run(argv) -> (rc, stdout, stderr)``.
"""

from __future__ import annotations

import json
import os
import re
import time

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_takeover as takeover
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import GENERATED_MARKER, kept_warnings, plan_removal, relative_path
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import apply as apply_files
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import diffs as file_diffs
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import plan as plan_files
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import remove as remove_files
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_network_claims import HostView, find_claims, nm_state, our_units, unit_interfaces

WAIT_ONLINE = "/lib/systemd/systemd-networkd-wait-online"
# Exists from before the units change until networkd has taken them: a run interrupted in
# between (Ctrl-C, a lost connection) leaves it, and the next run applies the units although
# none changes then. In /run: after a reboot networkd reads the units anyway.
STATE_DIR = "/run/n3x"
PENDING_MARKER = "networkd-apply.pending"
NETWORKD = "systemd-networkd.service"
# n3x_networkd names a device's unit NN-n3x-DEVICE.netdev and a link's NN-n3x-LINK.network.
_UNIT_FILE = re.compile(r"\d+-n3x-(.+)\.(netdev|network)")


def _named_by(paths, kind):
    found = (_UNIT_FILE.fullmatch(os.path.basename(path)) for path in paths)
    return sorted({match.group(1) for match in found if match and match.group(2) == kind})


def recreated_devices(paths):
    """Devices whose .netdev was written or removed, to delete before networkd reloads."""
    return _named_by(paths, "netdev")


def reloaded_links(paths):
    """Links whose .network was written or removed: `networkctl reload` reconfigures these."""
    return _named_by(paths, "network")


def to_reconfigure(reconfigure, paths):
    """The links of `reconfigure` that `networkctl reload` leaves alone (their .network is
    unchanged, e.g. bond members of a recreated bond).

    A link is never configured twice in a row: a second `networkctl reconfigure` restarts its
    DHCP client, drops the lease just acquired and asks for it again, and systemd-networkd
    252 can then remove the address of the lost lease after adding the same address for the
    new one - the link stays `configuring` with no address (l2-dhcp-simple failed so, 1 run
    in 7).
    """
    reloaded = reloaded_links(paths)
    return [name for name in reconfigure if name not in reloaded]


def apply_steps(kernel_modules, devices, reconfigure, enable=False):
    """[(argv, must_succeed)] that make a running networkd take changed units.

    Deleting a device that does not exist yet is fine, hence not must_succeed. `enable`
    only when networkd is not enabled: `systemctl enable` reloads systemd (1.8 s in a TCG
    guest, against 0.26 s for is-enabled and start).
    """
    steps = []
    if kernel_modules:
        steps.append((["modprobe", "-a", *kernel_modules], True))
    steps.extend((["ip", "link", "delete", device], False) for device in devices)
    if enable:
        steps.append((["systemctl", "enable", NETWORKD], True))
    steps.append((["systemctl", "start", NETWORKD], True))
    steps.append((["networkctl", "reload"], True))
    if reconfigure:
        steps.append((["networkctl", "reconfigure", *reconfigure], True))
    return steps


def _pending_paths(marker):
    """The changed unit paths an interrupted run had not applied yet (its marker), or None."""
    try:
        with open(marker) as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    try:
        return [str(path) for path in json.loads(text)["paths"]]
    except (ValueError, KeyError, TypeError):
        return []  # unreadable: nothing known to skip, so every link is reconfigured


def _write_marker(marker, paths):
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    with open(marker + ".tmp", "w") as handle:
        json.dump({"paths": paths}, handle)
    os.replace(marker + ".tmp", marker)


def wait_argv(interfaces, timeout):
    return [WAIT_ONLINE, f"--timeout={int(timeout)}", *(f"--interface={name}" for name in interfaces)]


def status_argv(interfaces):
    """networkctl status of the interfaces (NAME:STATE wait targets or plain names)."""
    return ["networkctl", "--no-pager", "--lines=20", "status", *(name.split(":", 1)[0] for name in interfaces)]


def _command_text(argv):
    return " ".join(argv)


def _on_the_node(files, dest, unit_dir):
    """(files, unit_dir) with the node's own paths (dest is its /), as the detection and the
    take-over see them."""
    return [{**item, "path": "/" + relative_path(dest, item["path"])} for item in files], "/" + relative_path(dest, unit_dir)


def other_managers(files, run, dest, unit_dir, take_over=False, take_over_connection=False, connected=(), takeover_dir=takeover.STATE_DIR):
    """(plan, node, fields): the other managers' claims on the units' interfaces, what the
    take-over does about them, and the result fields saying so (failed and msg when it
    refuses: by default on any claim, changing nothing). connected: the interfaces Ansible's
    connection comes through, or a function that finds them (called only when there are
    claims)."""
    node_files, node_unit_dir = _on_the_node(files, dest, unit_dir)
    view = HostView(dest, run)
    node = takeover.Node(run, dest, takeover_dir)
    claims = find_claims(view, node_files, node_unit_dir, GENERATED_MARKER)
    interfaces = unit_interfaces(our_units(node_files, node_unit_dir))
    connected = (connected() if callable(connected) else list(connected)) if claims else []
    nm = nm_state(view) if claims and take_over else (False, False)
    plan = takeover.make_plan(claims, interfaces, connected, take_over, take_over_connection, view, node, node.load_record(), nm)
    fields = {"conflicts": [c.as_dict() for c in claims], "taken_over": [], "warnings": []}
    if plan.refusals:
        if take_over:
            intro = f"{len(plan.refusals)} problem(s) with other network managers on this node; nothing was changed"
        else:
            intro = (
                f"other network managers claim the profile's interfaces ({len(plan.refusals)}); nothing was changed. "
                "Resolve each, or set networkd_take_over: true to take them over"
            )
        fields.update(failed=True, msg=intro + ":\n- " + "\n- ".join(plan.refusals))
    else:
        fields.update(taken_over=takeover.describe(plan), warnings=list(plan.warnings))
    return plan, node, fields


def converge(
    files,
    run,
    kernel_modules=(),
    reconfigure=(),
    wait_for=(),
    wait_timeout=60,
    unit_dir="/etc/systemd/network",
    dest="/",
    check_mode=False,
    diff=False,
    clock=time.monotonic,
    take_over=False,
    take_over_connection=False,
    connected=(),
    takeover_dir=takeover.STATE_DIR,
    sleep=time.sleep,
    state_dir=STATE_DIR,
):
    """Refuse other managers' claims or take the interfaces over (other_managers), install,
    apply on change, wait. Returns the module result (failed and msg on failure).

    Stale n3x files are pruned from unit_dir only: the module list's directory is shared
    with other n3x steps (kernel_settings).
    """
    plan, node, managers = other_managers(files, run, dest, unit_dir, take_over, take_over_connection, connected, takeover_dir)
    if managers.get("failed"):
        return {"changed": False, "written": [], "chmod": [], "removed": [], "recreated": [], "commands": [], **managers}
    planned = plan_files(dest, files, prune=[unit_dir])
    to_write, to_chmod, to_remove = planned
    pending = os.path.join(state_dir, PENDING_MARKER)
    interrupted = _pending_paths(pending)
    changed = sorted(set(to_write + to_remove + (interrupted or [])))
    # After a take-over networkd applies our units although none changed (the files that
    # matched before ours are gone).
    apply_units = bool(changed or plan.changes) or interrupted is not None
    result = {
        "changed": bool(to_write or to_chmod or to_remove or plan.changes) or interrupted is not None,
        "written": to_write,
        "chmod": to_chmod,
        "removed": to_remove,
        "recreated": [],
        "commands": [],
        **managers,
        "resumed": interrupted is not None,
    }
    if planned.kept:
        result["warnings"] += kept_warnings(dest, planned.kept)
    if diff:
        result["diff"] = takeover.plan_diffs(plan, dest) + file_diffs(dest, files, to_write + to_remove)
    if check_mode:
        return result
    if apply_units:
        result["recreated"] = recreated_devices(changed)
        # Before the take-over: a run interrupted during it still applies our units next time.
        _write_marker(pending, changed)
    if plan.changes:
        try:
            result["commands"].extend(takeover.take_over(plan, node, clock=clock, sleep=sleep))
        except takeover.TakeoverError as exc:
            result.update(failed=True, msg=f"taking the interfaces over failed: {exc} (what was done so far is in {takeover_dir}/record.json)")
            return result
    apply_files(dest, files, prune=[unit_dir], planned=planned)
    if apply_units:
        enabled = run(["systemctl", "is-enabled", "--quiet", NETWORKD])[0] == 0
        links = to_reconfigure(reconfigure, changed)
        for argv, must_succeed in apply_steps(kernel_modules, result["recreated"], links, enable=not enabled):
            rc, out, err = run(argv)
            result["commands"].append(_command_text(argv))
            if rc != 0 and must_succeed:
                result.update(failed=True, msg=f"{_command_text(argv)} failed (rc {rc}): {(err or out).strip()}")
                return result
        os.unlink(pending)
    if wait_for:
        started = clock()
        rc, _out, err = run(wait_argv(wait_for, wait_timeout))
        result["wait_seconds"] = round(clock() - started, 1)
        if rc != 0:
            _rc, status, status_err = run(status_argv(wait_for))
            result.update(
                failed=True,
                msg=f"not configured within {wait_timeout} s: {', '.join(wait_for)}\n{(status or status_err or err).strip()}",
            )
    return result


def _holds(path, content):
    """Does the regular file at path (not a link) hold exactly this text?"""
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    with open(path, "rb") as handle:
        return handle.read(len(content.encode("utf-8")) + 1) == content.encode("utf-8")


def give_back(files, run, unit_dir="/etc/systemd/network", dest="/", check_mode=False, diff=False, takeover_dir=takeover.STATE_DIR):
    """Remove the node's n3x network files and give its interfaces back: restore what the
    take-over moved aside (the record), and hand each interface to its manager again."""
    node = takeover.Node(run, dest, takeover_dir)
    node_files, node_unit_dir = _on_the_node(files, dest, unit_dir)
    steps, refusals, record = takeover.give_back_plan(node)
    result = {"changed": False, "removed": [], "restored": [], "commands": [], "given_back": []}
    if refusals:
        result.update(failed=True, msg="cannot give the interfaces back; nothing was changed:\n- " + "\n- ".join(refusals))
        return result
    # Our units: what the unit directory's manifest proves n3x wrote; the module list (in a
    # directory other n3x steps share) only when it is exactly what n3x would write there.
    removal = plan_removal(dest, [unit_dir])
    module_lists = [item for item in files if os.path.dirname(relative_path(dest, item["path"])) != relative_path(dest, unit_dir)]
    identical = [relative_path(dest, item["path"]) for item in module_lists if _holds(os.path.join(dest, relative_path(dest, item["path"])), item["content"])]
    to_remove = sorted(removal[2]) + identical
    units = our_units(node_files, node_unit_dir)
    devices = sorted({device for name, text in units.items() if name.endswith(".netdev") for device in recreated_devices([name])})
    physical = sorted(name for name, (_file, kind) in unit_interfaces(units).items() if kind is None and name not in devices)
    result["removed"] = to_remove
    result["restored"] = [f"{path} ({kind})" for kind, path, _entry in steps]
    result["changed"] = bool(to_remove or steps)
    if removal.kept:
        result["warnings"] = kept_warnings(dest, removal.kept)
    if diff:
        result["diff"] = takeover.give_back_diffs(steps, node) + file_diffs(dest, [], to_remove)
    if check_mode or not result["changed"]:
        return result
    remove_files(dest, removal)
    for path in identical:
        os.unlink(os.path.join(dest, path))
    try:
        commands, managers = takeover.give_back(steps, record, node)
        result["commands"].extend(commands)
        result["commands"].extend(takeover.hand_back(node, record, devices, physical))
    except takeover.TakeoverError as exc:
        result.update(failed=True, msg=f"giving the interfaces back failed: {exc}")
        return result
    takeover.forget(node, record)
    result["given_back"] = sorted(m for m in managers if m)
    return result
