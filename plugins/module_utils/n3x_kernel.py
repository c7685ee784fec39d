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

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
    return os.path.join(proc_sys, *key.split("."))


def _normalized(value):
    return " ".join(str(value).split())


def converge(name, modules, sysctls, run, root="/", proc_sys="/proc/sys", sys_module="/sys/module", check_mode=False):
    """Make the modules loaded and the parameters set, now and at boot. Returns the result."""
    if not _FILE_NAME.match(name):
        raise KernelError(f"name: {name!r} is not a file name (letters, digits, '.', '_', '-')")
    sysctls = {key: _normalized(value) for key, value in sysctls.items()}
    files = [{**f, "path": os.path.join(root, f["path"].lstrip("/"))} for f in settings_files(name, modules, sysctls)]
    planned = plan_files(root, files, prune=False)
    missing = [m for m in modules if not module_loaded(m, sys_module)]
    result = {"changed": False, "written": planned[0] + planned[1], "loaded": missing, "set": []}
    if not check_mode:
        apply_files(root, files, prune=False, planned=planned)
        if missing:
            rc, out, err = run(["modprobe", "-a", *missing])
            if rc != 0:
                raise KernelError(f"modprobe -a {' '.join(missing)} failed (rc {rc}): {(err or out).strip()}")
    for key, value in sysctls.items():
        path = sysctl_path(key, proc_sys)
        try:
            with open(path, encoding="utf-8") as handle:
                current = _normalized(handle.read())
        except FileNotFoundError:
            if check_mode and missing:
                result["set"].append(key)  # appears once the modules load
                continue
            raise KernelError(f"{key}: no such kernel parameter ({path} does not exist)") from None
        if current != value:
            result["set"].append(key)
            if not check_mode:
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(value + "\n")
    result["changed"] = bool(result["written"] or result["loaded"] or result["set"])
    return result
