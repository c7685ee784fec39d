# Copyright: n3x developers
# MIT License
"""Kernel modules and parameters, now and at boot, in one step on the node.

Writes ``/etc/modules-load.d/NAME.conf`` and ``/etc/sysctl.d/90-NAME.conf``, loads the
modules that are not loaded yet and sets the parameters whose live value differs. One
module run instead of one per module and per parameter: each run costs seconds on a small
board or a TCG guest. Commands run through an injected ``run(argv) -> (rc, stdout, stderr)``.
"""

from __future__ import annotations

import os
import re

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import GENERATED_MARKER
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import apply as apply_files
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import plan as plan_files

# Used with fullmatch: `$` would match before a trailing newline, and every value here
# becomes a line of a file in /etc or a path under /proc/sys.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MODULE = re.compile(r"[A-Za-z0-9_-]+")
# sysctl.d(5) dotted form: words joined by '.', where '/' stands for a '.' inside a word
# (net.ipv4.conf.eth1/200.forwarding is /proc/sys/net/ipv4/conf/eth1.200/forwarding).
_WORD = r"[A-Za-z0-9_-]+"
_SYSCTL_KEY = re.compile(rf"{_WORD}(\.{_WORD}(/{_WORD})*)+")


class KernelError(Exception):
    pass


def settings_files(name, modules, sysctls):
    """[{path, content}] of the boot-time lists (absolute paths); none for an empty list."""
    header = f"{GENERATED_MARKER} ({name}); changes here are overwritten."
    files = []
    if modules:
        files.append({"path": f"/etc/modules-load.d/{name}.conf", "content": "\n".join([header, *modules]) + "\n"})
    if sysctls:
        lines = [f"{key} = {value}" for key, value in sysctls.items()]
        files.append({"path": f"/etc/sysctl.d/90-{name}.conf", "content": "\n".join([header, *lines]) + "\n"})
    return files


def module_loaded(module, sys_module="/sys/module"):
    """Loaded or built in: both have /sys/module/NAME (with - spelled _)."""
    return os.path.isdir(os.path.join(sys_module, module.replace("-", "_")))


def sysctl_path(key, proc_sys="/proc/sys"):
    """The /proc/sys file of a key that check_input accepted (no part can be '..' or absolute)."""
    return os.path.join(proc_sys, *(word.replace("/", ".") for word in key.split(".")))


def _normalized(value):
    return " ".join(str(value).split())


def check_input(name, modules, sysctls):
    """Every problem with the input, one line each (nothing is written before this passes)."""
    problems = []
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
        problems.append(f"name: {name!r} is not a file name (letters, digits, '.', '_', '-')")
    for module in modules:
        if not isinstance(module, str) or not _MODULE.fullmatch(module):
            problems.append(f"modules: {module!r} is not a kernel module name (letters, digits, '_', '-')")
    for key, value in sysctls.items():
        if not isinstance(key, str) or not _SYSCTL_KEY.fullmatch(key):
            problems.append(f"sysctls: {key!r} is not a kernel parameter name (dotted words of letters, digits, '_', '-', like net.ipv4.ip_forward)")
        elif not _normalized(value).isprintable():
            problems.append(f"sysctls.{key}: {str(value)!r} holds a control character")
    if problems:
        raise KernelError("\n".join(problems))


def converge(name, modules, sysctls, run, root="/", proc_sys="/proc/sys", sys_module="/sys/module", check_mode=False):
    """Make the modules loaded and the parameters set, now and at boot. Returns the result.

    Order: check the input, load the missing modules (they bring parameters), check that
    every parameter exists, and only then write the boot-time files and set the values, so
    a bad name or an unknown parameter leaves no file behind.
    """
    check_input(name, modules, sysctls)
    sysctls = {key: _normalized(value) for key, value in sysctls.items()}
    missing = [m for m in modules if not module_loaded(m, sys_module)]
    if missing and not check_mode:
        rc, out, err = run(["modprobe", "-a", *missing])
        if rc != 0:
            raise KernelError(f"modprobe -a {' '.join(missing)} failed (rc {rc}): {(err or out).strip()}")
    to_set = []
    for key, value in sysctls.items():
        path = sysctl_path(key, proc_sys)
        try:
            with open(path, encoding="utf-8") as handle:
                current = _normalized(handle.read())
        except FileNotFoundError:
            if check_mode and missing:
                to_set.append(key)  # appears once the modules load
                continue
            raise KernelError(f"{key}: no such kernel parameter ({path} does not exist)") from None
        if current != value:
            to_set.append(key)
    files = [{**f, "path": os.path.join(root, f["path"].lstrip("/"))} for f in settings_files(name, modules, sysctls)]
    planned = plan_files(root, files, prune=False)
    result = {"changed": False, "written": planned[0] + planned[1], "loaded": missing, "set": to_set}
    if not check_mode:
        apply_files(root, files, prune=False, planned=planned)
        for key in to_set:
            with open(sysctl_path(key, proc_sys), "w", encoding="utf-8") as handle:
                handle.write(sysctls[key] + "\n")
    result["changed"] = bool(result["written"] or result["loaded"] or result["set"])
    return result
