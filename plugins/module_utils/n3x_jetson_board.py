# Copyright: n3x developers
# MIT License
"""A flashed Jetson, read after its first boot: what it is, its power modes, its data partition.

Pure Python, no Ansible; the jetson role's filters call it.

- Power modes: /etc/nvpmodel.conf names them in lines ``< POWER_MODEL ID=0 NAME=MAXN >`` (and
  ``< PM_CONFIG DEFAULT=2 >``); ``nvpmodel -q`` prints ``NV Power Mode: <NAME>`` then the id.
  The ids differ by module (Orin Nano: 0 15W, 1 7W; AGX Orin: 0 MAXN ...), so n3x takes a name.
- The board: /proc/device-tree/model (NUL-terminated) and /etc/nv_tegra_release, whose first
  line is ``# R36 (release), REVISION: 4.3, ...`` (nv_tegra/nv_tegra_release of the BSP).
"""

from __future__ import annotations

import re

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson_bsp import FAMILIES, BspError, parse_release, release_matches

_POWER_MODEL = re.compile(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([A-Za-z0-9_.+-]+)\s*>")
_PM_DEFAULT = re.compile(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>")
_QUERY_NAME = re.compile(r"NV Power Mode:\s*([A-Za-z0-9_.+-]+)")
_MODE_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,32}")


class BoardError(Exception):
    """A problem with what the board reports."""


def power_models(conf_text):
    """{name: id} from nvpmodel.conf, and the default id (or None)."""
    models, default = {}, None
    for line in (conf_text or "").splitlines():
        line = line.strip()
        match = _POWER_MODEL.fullmatch(line)
        if match:
            models.setdefault(match.group(2), int(match.group(1)))
            continue
        match = _PM_DEFAULT.fullmatch(line)
        if match:
            default = int(match.group(1))
    return models, default


def power_mode(conf_text, wanted, query_output="", conf_path="/etc/nvpmodel.conf"):
    """{'id', 'name', 'current_id', 'current_name', 'change'} for the mode named ``wanted``."""
    if not isinstance(wanted, str) or not _MODE_NAME.fullmatch(wanted):
        raise BoardError(f"power mode {wanted!r} is not a mode name such as 15W or MAXN")
    models, _default = power_models(conf_text)
    if not models:
        raise BoardError(f"{conf_path} has no '< POWER_MODEL ID=n NAME=x >' line: not an nvpmodel configuration")
    if wanted not in models:
        known = ", ".join(f"{name} (id {number})" for name, number in sorted(models.items(), key=lambda item: item[1]))
        raise BoardError(f"power mode {wanted} is not in {conf_path}; this board's modes: {known}")
    lines = [line.strip() for line in (query_output or "").splitlines() if line.strip()]
    current_id = int(lines[-1]) if lines and lines[-1].isdigit() else None
    names = [m.group(1) for m in map(_QUERY_NAME.fullmatch, lines) if m]
    current_name = names[-1] if names else None
    return {"id": models[wanted], "name": wanted, "current_id": current_id, "current_name": current_name, "change": current_id != models[wanted]}


def board_check(model_text, release_text, expected_family="", expected_release=""):
    """{'model', 'release', 'problems'} from /proc/device-tree/model and /etc/nv_tegra_release."""
    model = (model_text or "").replace("\x00", " ").strip()
    problems = []
    release = None
    try:
        release = parse_release(release_text or "", "/etc/nv_tegra_release")
    except BspError as exc:
        if expected_release:
            problems.append(str(exc))
    if expected_release and release and not release_matches(release, expected_release):
        problems.append(f"/etc/nv_tegra_release: the board runs {release}, expected {expected_release}")
    if expected_family:
        family = FAMILIES.get(expected_family)
        if family is None:
            problems.append(f"expected module family {expected_family!r} is not one of: {', '.join(FAMILIES)}")
        elif not re.search(family.model_pattern, model):
            problems.append(f"/proc/device-tree/model: the board is {model or 'unknown (no device-tree model)'!r}, expected a {family.module}")
    return {"model": model, "release": release, "problems": problems}


# --- the Longhorn data partition ------------------------------------------------------------------


def data_disk(blkid_rc, blkid_export, label, wipe=False, device="the data device"):
    """What to do with the data partition, from ``blkid --probe --output export`` (rc 2: nothing found).

    {'action': 'format'|'mount'|'wipe'|'refuse', 'found': {...}, 'msg': str}. A partition holding
    anything but the file system n3x made (its label) is foreign: it may hold data, so it is
    refused unless ``wipe`` says to erase it.
    """
    if blkid_rc == 2:
        return {"action": "format", "found": {}, "msg": f"{device} is empty: creating a file system labelled {label}"}
    if blkid_rc != 0:
        return {"action": "refuse", "found": {}, "msg": f"blkid could not probe {device} (exit {blkid_rc}); refusing to format or mount it"}
    found = {}
    for line in (blkid_export or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Z_]+", key):
            found[key] = value
    what = ", ".join(f"{k}={found[k]}" for k in ("TYPE", "LABEL", "UUID", "PTTYPE") if k in found) or "an unknown signature"
    if found.get("LABEL") == label and found.get("TYPE") in ("ext4", "xfs") and found.get("UUID"):
        return {"action": "mount", "found": found, "msg": f"{device} holds n3x's file system ({what})"}
    if wipe:
        return {"action": "wipe", "found": found, "msg": f"{device} holds {what}, not n3x's file system: erasing it, as jetson_data_wipe says"}
    return {
        "action": "refuse",
        "found": found,
        "msg": f"{device} holds {what}, not the file system n3x made (label {label}); it may hold data, so it is left untouched. "
        "Set jetson_data_wipe=true to erase it, or point jetson_data_device elsewhere",
    }
