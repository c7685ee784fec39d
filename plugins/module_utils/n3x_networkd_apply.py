# Copyright: n3x developers
# MIT License
"""Put a node's generated network in place on the node itself, in one step.

Install the units (``n3x_files``), and only when one changed: load the kernel modules,
delete the devices whose ``.netdev`` changed (networkd does not change a bond's mode or a
VLAN id in place), make sure networkd runs, reload it and reconfigure the profile's NICs.
Then, changed or not, wait (bounded) until the profile's interfaces reach their states.

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

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import apply as apply_files
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import diffs as file_diffs
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import kept_warnings
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import plan as plan_files

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
    state_dir=STATE_DIR,
):
    """Install, apply on change, wait. Returns the module result (failed and msg on failure).

    Stale n3x files are pruned from unit_dir only: the module list's directory is shared
    with other n3x steps (kernel_settings).
    """
    planned = plan_files(dest, files, prune=[unit_dir])
    to_write, to_chmod, to_remove = planned
    pending = os.path.join(state_dir, PENDING_MARKER)
    interrupted = _pending_paths(pending)
    changed = sorted(set(to_write + to_remove + (interrupted or [])))
    apply_units = bool(changed) or interrupted is not None
    result = {
        "changed": bool(to_write or to_chmod or to_remove) or interrupted is not None,
        "written": to_write,
        "chmod": to_chmod,
        "removed": to_remove,
        "recreated": [],
        "commands": [],
        "resumed": interrupted is not None,
    }
    if planned.kept:
        result["warnings"] = kept_warnings(dest, planned.kept)
    if diff:
        result["diff"] = file_diffs(dest, files, to_write + to_remove)
    if check_mode:
        return result
    if apply_units:
        result["recreated"] = recreated_devices(changed)
        _write_marker(pending, changed)
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
