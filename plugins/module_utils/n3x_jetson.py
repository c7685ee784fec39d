# Copyright: n3x developers
# MIT License
"""NVIDIA Jetson flashing logic: boards in recovery mode, which board to flash, the flash run and its verdict.

Everything here is pure Python (no Ansible imports): it parses ``lsusb`` output and
``/sys/bus/usb/devices``, decides which board to flash, runs NVIDIA's script in its own process
group and judges its output. The BSP tree and the flash table are in ``n3x_jetson_bsp``; the
per-board image customisation is in ``n3x_jetson_image``.

Sources (L4T R36, JetPack 6; BSP copies read on GitHub: Seeed-Studio/Linux_for_Tegra,
johnnynunez/Linux_for_Tegra):

- Recovery-mode USB product ids: fill_devpaths() in tools/kernel_flash/l4t_initrd_flash.sh.
- USB paths: the same function builds ``${busnum}-${devpath}`` (``1-2``, ``3-1.4``), the sysfs
  device name and what ``--usb-instance`` takes.
- Success lines: tools/kernel_flash/initrd_flash/nv_flash_from_network.sh prints
  ``Flash is successful`` then ``Reboot device`` after the flash in the initrd (``set -e``: only on
  success), relayed to the host by l4t_network_flash.func; flash.sh ends with
  ``*** The target <board> has been flashed successfully. ***``; a massflash run ends with
  ``Flash complete (WITH FAILURES)`` and exit 1 when any board failed, and writes each board's
  output to ``initrdlog/flash_<usb path>_<instance>_<time>.log``.
"""

from __future__ import annotations

import os
import re

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson_bsp import FAMILIES, FLASH_SH, INITRD_FLASH

NVIDIA_VENDOR_ID = "0955"
_MODULE_NAMES = {
    "7323": "Jetson Orin NX 16GB",
    "7423": "Jetson Orin NX 8GB",
    "7523": "Jetson Orin Nano 8GB",
    "7623": "Jetson Orin Nano 4GB",
    "7023": "Jetson AGX Orin",
    "7223": "Jetson AGX Orin 32GB",
}
# USB product id in recovery mode (APX) -> module and family.
RECOVERY_MODULES = {pid: {"module": _MODULE_NAMES[pid], "family": f.name} for f in FAMILIES.values() for pid in f.recovery_ids}

SUCCESS_LINES = {
    INITRD_FLASH: re.compile(r"Flash is successful"),
    FLASH_SH: re.compile(r"\*\*\* The target \S+ has been flashed successfully\. \*\*\*"),
}
MASSFLASH_FAILURE = "Flash complete (WITH FAILURES)"
_MASSFLASH_LOG = re.compile(r"Log will be saved to Linux_for_Tegra/(initrdlog/flash_(\d+-\d+(?:\.\d+)*)_(\d+)_(\d{8}-\d{6})\.log)")
_LSUSB = re.compile(r"Bus (\d{3}) Device (\d{3}): ID ([0-9a-fA-F]{4}):([0-9a-fA-F]{4})\s*(.*)")
_USB_PATH = re.compile(r"\d+-\d+(\.\d+)*")


class JetsonError(Exception):
    """A refusal: the message says what is wrong and what to do."""


def parse_lsusb(text):
    """Devices from plain ``lsusb`` output: dicts of bus, device, vendor, product, description."""
    devices = []
    for line in (text or "").splitlines():
        match = _LSUSB.fullmatch(line.strip())
        if match:
            bus, device, vendor, product, description = match.groups()
            devices.append(
                {"bus": int(bus), "device": int(device), "vendor": vendor.lower(), "product": product.lower(), "description": description, "usb_path": None}
            )
    return devices


def read_sysfs_usb(root="/sys/bus/usb/devices"):
    """Devices from sysfs, with their USB path (``1-2.3``, what ``--usb-instance`` takes).

    Returns None when ``root`` does not exist (no sysfs USB on this machine).
    """
    if not os.path.isdir(root):
        return None
    devices = []
    for name in sorted(os.listdir(root)):
        if not _USB_PATH.fullmatch(name):  # interfaces (1-2:1.0) and root hubs (usb1) are not devices
            continue
        entry = os.path.join(root, name)
        fields = {}
        for key in ("idVendor", "idProduct", "busnum", "devnum", "product"):
            try:
                with open(os.path.join(entry, key), encoding="utf-8", errors="replace") as handle:
                    fields[key] = handle.read().strip()
            except OSError:
                fields[key] = ""
        if not fields["idVendor"] or not fields["idProduct"]:
            continue
        devices.append(
            {
                "bus": int(fields["busnum"]) if fields["busnum"].isdigit() else None,
                "device": int(fields["devnum"]) if fields["devnum"].isdigit() else None,
                "vendor": fields["idVendor"].lower(),
                "product": fields["idProduct"].lower(),
                "description": fields["product"],
                "usb_path": name,
            }
        )
    return devices


def detect_boards(devices):
    """(boards in recovery mode, other NVIDIA devices) from a device list."""
    boards, others = [], []
    for device in devices:
        if device["vendor"] != NVIDIA_VENDOR_ID:
            continue
        module = RECOVERY_MODULES.get(device["product"])
        if module is None:
            others.append(device)
            continue
        boards.append({**device, "usb_id": f"{device['vendor']}:{device['product']}", "module": module["module"], "family": module["family"]})
    return boards, others


def describe(board):
    where = f"USB path {board['usb_path']}" if board.get("usb_path") else f"bus {board['bus']:03d} device {board['device']:03d}"
    return f"{board.get('module', 'NVIDIA device')} ({board['vendor']}:{board['product']}, {where})"


def no_board_message(others, host="this machine"):
    known = ", ".join(f"{NVIDIA_VENDOR_ID}:{pid} {m['module']}" for pid, m in sorted(RECOVERY_MODULES.items()))
    message = f"no Jetson board in recovery mode on {host}: no USB device with a recovery id ({known})"
    if others:
        message += "; NVIDIA devices that are not in recovery mode (a booted board, for example): " + ", ".join(
            f"{d['vendor']}:{d['product']}" + (f" at {d['usb_path']}" if d.get("usb_path") else "") for d in others
        )
    return message + ". Connect the board's recovery USB port to this machine and put it in Force Recovery Mode (hold REC, then power on or reset)."


def select_board(boards, family=None, usb_path=None, others=(), host="this machine", storage=None, sole=False):
    """The one board to flash, or JetsonError saying why none can be chosen.

    ``family`` is a n3x_jetson_bsp.Family (from the board config); ``sole`` refuses when any
    other board is in recovery mode too (a BSP whose script ignores --usb-instance).
    """
    if not boards:
        raise JetsonError(no_board_message(others, host))
    candidates = boards
    if usb_path:
        candidates = [b for b in boards if b.get("usb_path") == usb_path]
        if not candidates:
            raise JetsonError(
                f"no Jetson board in recovery mode at USB path {usb_path} on {host}; boards in recovery mode: {', '.join(describe(b) for b in boards)}"
            )
    if family is not None:
        wrong = [b for b in candidates if b["family"] != family.name]
        if wrong:
            raise JetsonError(f"wrong module: found {', '.join(describe(b) for b in wrong)}, but the board config is for {family.module}; refusing to flash")
        if storage == "sd":
            no_slot = [b for b in candidates if b["product"] not in family.sd_ids]
            if no_slot:
                raise JetsonError(
                    f"{', '.join(describe(b) for b in no_slot)} has no microSD slot: only the Orin Nano devkit module (p3767-0005, "
                    f"recovery id {', '.join(family.sd_ids)}) takes storage sd; flash it to nvme or usb"
                )
    if len(candidates) > 1:
        raise JetsonError(
            f"{len(candidates)} Jetson boards in recovery mode on {host}: {', '.join(describe(b) for b in candidates)}; "
            "set the USB path of each board (jetson_flash_usb_path), or connect one board at a time"
        )
    if sole and len(boards) > 1:
        raise JetsonError(
            f"{len(boards)} Jetson boards in recovery mode on {host} ({', '.join(describe(b) for b in boards)}), and this BSP's "
            "flash script does not skip boards other than --usb-instance: leave only the board to flash in recovery mode"
        )
    return candidates[0]


def select_batch(boards, family, usb_paths, limit, host="this machine", sku=None):
    """Massflash: the boards in recovery mode must be exactly the batch, all of the family and,
    where the family says which recovery ids a SKU shows, of the SKU the images are built for."""
    found = {b.get("usb_path") for b in boards}
    wanted = set(usb_paths)
    if None in found:
        raise JetsonError("massflash needs sysfs USB paths to match boards to the inventory; this host lists USB devices only through lsusb")
    if len(wanted) != len(usb_paths) or not all(p and _USB_PATH.fullmatch(p) for p in usb_paths):
        raise JetsonError(f"every board of a massflash batch needs its own USB path (jetson_flash_usb_path): got {usb_paths}")
    if len(usb_paths) > limit:
        raise JetsonError(f"{len(usb_paths)} boards in the batch, more than --massflash {limit}")
    if found != wanted:
        missing, extra = sorted(wanted - found), sorted(found - wanted)
        raise JetsonError(
            f"massflash flashes every board in recovery mode on {host}, so they must be exactly the batch: "
            + (f"not in recovery mode: {', '.join(missing)}; " if missing else "")
            + (f"in recovery mode but not in the batch: {', '.join(extra)}; " if extra else "")
            + "refusing to flash"
        )
    wrong = [b for b in boards if b["family"] != family.name]
    if wrong:
        raise JetsonError(f"wrong module: found {', '.join(describe(b) for b in wrong)}, but the board config is for {family.module}; refusing to flash")
    ids = family.sku_ids.get(sku) if sku else None
    wrong = [b for b in boards if ids and b["product"] not in ids]
    if wrong:
        raise JetsonError(
            f"wrong module: found {', '.join(describe(b) for b in wrong)}, but the batch's images are built for BOARDSKU {sku} "
            f"(recovery id {', '.join(ids)}); refusing to flash"
        )
    return sorted(boards, key=lambda b: b["usb_path"])


def device_lister(module, sysfs_root):
    """A function giving (devices, source): from sysfs, else lsusb, else nothing.

    ``module`` is the AnsibleModule (only its get_bin_path and run_command are used).
    """

    def list_devices():
        devices = read_sysfs_usb(sysfs_root)
        if devices is not None:
            return devices, "sysfs"
        lsusb = module.get_bin_path("lsusb")
        if lsusb:
            rc, out, _err = module.run_command([lsusb])
            if rc == 0:
                return parse_lsusb(out), "lsusb"
        return [], "none"

    return list_devices


def find_boards(list_devices, family=None, usb_path=None, required=True, host="this machine", storage=None):
    """A jetson_recovery result from ``list_devices() -> (devices, source)``."""
    devices, source = list_devices()
    boards, others = detect_boards(devices)
    result = {"changed": False, "boards": boards, "other_nvidia_devices": others, "source": source, "selected": None}
    try:
        result["selected"] = select_board(boards, family, usb_path, others, host, storage)
    except JetsonError as exc:
        result["reason"] = str(exc)
        if required:
            note = "" if source != "none" else " (no USB device is visible at all here: neither sysfs nor lsusb lists any)"
            result.update(failed=True, msg=str(exc) + note)
    return result


def flash_script(argv):
    """Which NVIDIA script an argv runs."""
    return INITRD_FLASH if argv[0].endswith(INITRD_FLASH) else FLASH_SH


def _lines(text):
    return [line.strip() for line in (text or "").replace("\r", "\n").split("\n")]


def success_line_printed(script, output):
    """True when a whole line of ``output`` is the script's success line (never a line that merely contains it)."""
    pattern = SUCCESS_LINES[script]
    return any(pattern.fullmatch(line) for line in _lines(output))


def redact(text):
    """Script output with any line that mentions a password removed.

    l4t_create_default_user.sh prints "Creating: Username - <u>, Password - <p>, Autologin - <a>".
    """
    return "\n".join(line if "password" not in line.lower() else "[line about the password removed]" for line in (text or "").splitlines())


def flash_result(rc, output, argv, timed_out=False):
    """{'flashed': bool, 'msg': str}: flashed only when the script exited 0 and printed its success line."""
    script = flash_script(argv)
    success = success_line_printed(script, output)
    if timed_out:
        return {"flashed": False, "msg": f"{script} was stopped after the timeout (its process group got SIGTERM, then SIGKILL); the board is NOT flashed"}
    if rc == 0 and success:
        return {"flashed": True, "msg": f"{script} exited 0 and printed its success line"}
    if rc == 0:
        return {"flashed": False, "msg": f"{script} exited 0 but never printed its success line; the board is NOT known to be flashed"}
    tail = " | ".join(line for line in _lines(output)[-6:] if line)
    return {"flashed": False, "msg": f"{script} failed with exit code {rc}; the board is NOT flashed: {tail}"}


def massflash_results(rc, output, bsp_dir, usb_paths, read=None):
    """Per board of a massflash --flash-only run: flashed only when the run exited 0, printed no
    failure line and the board's own log holds the success line."""
    read = read or (lambda path: open(path, encoding="utf-8", errors="replace").read())  # noqa: SIM115
    logs = {}
    for line in _lines(output):
        match = _MASSFLASH_LOG.fullmatch(line)
        if match:
            logs[match.group(2)] = os.path.join(bsp_dir, match.group(1))
    failed_run = rc != 0 or MASSFLASH_FAILURE in _lines(output)
    results = {}
    for path in usb_paths:
        log = logs.get(path)
        if log is None:
            results[path] = {"flashed": False, "log_path": None, "msg": f"the massflash run never started a flash for USB path {path}; NOT flashed"}
            continue
        try:
            text = read(log)
        except OSError as exc:
            results[path] = {"flashed": False, "log_path": log, "msg": f"cannot read {log}: {exc}; NOT known to be flashed"}
            continue
        success = success_line_printed(INITRD_FLASH, text)
        if success and not failed_run:
            results[path] = {"flashed": True, "log_path": log, "msg": "its flash log holds 'Flash is successful' and the massflash run exited 0"}
        elif success:
            results[path] = {
                "flashed": False,
                "log_path": log,
                "msg": f"its log holds the success line but the massflash run exited {rc}; NOT reported flashed",
            }
        else:
            tail = " | ".join(line for line in _lines(text)[-4:] if line)
            results[path] = {"flashed": False, "log_path": log, "msg": f"its flash log has no success line; NOT flashed: {tail}"}
    return results
