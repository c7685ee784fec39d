# Copyright: n3x developers
# MIT License
"""NVIDIA Jetson flashing logic: boards in recovery mode, preflight, flash commands, results.

Everything here is pure Python (no Ansible imports) and never flashes anything itself:
it parses ``lsusb`` output and ``/sys/bus/usb/devices``, decides which board to flash,
checks an L4T BSP tree (``Linux_for_Tegra``), builds the exact argv of NVIDIA's flash
scripts and judges their output. The modules ``n3x.cluster.jetson_recovery`` and
``n3x.cluster.jetson_flash`` run the commands.

Sources (L4T r36, JetPack 6):

- Recovery-mode USB product ids: the "To Determine Whether the Developer Kit Is in Force
  Recovery Mode" table of the Jetson Linux Quick Start
  (https://docs.nvidia.com/jetson/archives/r36.4/DeveloperGuide/IN/QuickStart.html), as
  also listed by Seeed's reComputer flashing guides for the Orin NX/Nano modules.
- Flash commands: the Quick Start's "To flash the Jetson developer kit operating software"
  (NVMe and USB with ``tools/kernel_flash/l4t_initrd_flash.sh``) and the Flashing Support
  page (https://docs.nvidia.com/jetson/archives/r36.4/DeveloperGuide/SD/FlashingSupport.html)
  for ``flash.sh <board> <rootdev>``.
- Default user: ``tools/l4t_create_default_user.sh`` usage, where ``-p`` may be left out
  ("If not set then randomized password will be generated").
"""

from __future__ import annotations

import os
import re
import shutil

NVIDIA_VENDOR_ID = "0955"

# Board configs (Linux_for_Tegra/<name>.conf) that suit each module family.
ORIN_NANO_NX_CONFIGS = ("jetson-orin-nano-devkit", "jetson-orin-nano-devkit-super", "jetson-orin-nano-devkit-nvme", "p3509-a02-p3767-0000")
AGX_ORIN_CONFIGS = ("jetson-agx-orin-devkit", "jetson-agx-orin-devkit-industrial", "jetson-agx-orin-devkit-64gb")

# USB product id in recovery mode (APX) -> module. Orin NX/Nano ids: NVIDIA Quick Start r36
# and Seeed's guides agree. AGX Orin ids: UNCERTAIN, taken from Seeed's reComputer J501
# guide (32GB 7223, 64GB 7023); NVIDIA's table also lists 7023 for the AGX Orin devkit
# module (P3701-0000/0005). Check `lsusb` of a board in recovery before relying on them.
RECOVERY_MODULES = {
    "7323": {"module": "Jetson Orin NX 16GB", "sku": "p3767-0000", "board_configs": ORIN_NANO_NX_CONFIGS},
    "7423": {"module": "Jetson Orin NX 8GB", "sku": "p3767-0001", "board_configs": ORIN_NANO_NX_CONFIGS},
    "7523": {"module": "Jetson Orin Nano 8GB", "sku": "p3767-0003/0005", "board_configs": ORIN_NANO_NX_CONFIGS},
    "7623": {"module": "Jetson Orin Nano 4GB", "sku": "p3767-0004", "board_configs": ORIN_NANO_NX_CONFIGS},
    "7023": {"module": "Jetson AGX Orin (64GB / devkit)", "sku": "p3701-0000/0005", "board_configs": AGX_ORIN_CONFIGS},  # UNCERTAIN
    "7223": {"module": "Jetson AGX Orin 32GB", "sku": "p3701-0004", "board_configs": AGX_ORIN_CONFIGS},  # UNCERTAIN
}

# Storage targets. nvme/usb: Quick Start r36, Orin Nano/NX devkit, "NVMe" and "USB drive"
#   sudo ./tools/kernel_flash/l4t_initrd_flash.sh --external-device nvme0n1p1 \
#     -c tools/kernel_flash/flash_l4t_t234_nvme.xml -p "-c bootloader/generic/cfg/flash_t234_qspi.xml" \
#     --showlogs --network usb0 jetson-orin-nano-devkit internal
# sd: `sudo ./flash.sh <board> mmcblk0p1` (the module's microSD slot, Flashing Support r36).
# emmc: `sudo ./flash.sh <board> internal` (AGX Orin devkit, Quick Start r36).
INITRD_FLASH = "tools/kernel_flash/l4t_initrd_flash.sh"
FLASH_SH = "flash.sh"
DEFAULT_USER_SCRIPT = "tools/l4t_create_default_user.sh"
EXTERNAL_DEVICES = {"nvme": "nvme0n1p1", "usb": "sda1"}
FLASH_SH_ROOTDEV = {"sd": "mmcblk0p1", "emmc": "internal"}
STORAGES = (*EXTERNAL_DEVICES, *FLASH_SH_ROOTDEV)
T234_EXTERNAL_LAYOUT = "tools/kernel_flash/flash_l4t_t234_nvme.xml"
T234_QSPI_LAYOUT = "bootloader/generic/cfg/flash_t234_qspi.xml"

# The last lines each script prints when, and only when, it finished flashing:
#   l4t_initrd_flash.sh: "Flash is successful" then "Reboot device"
#   flash.sh:            "*** The target generic has been flashed successfully. ***"
SUCCESS_LINES = {
    INITRD_FLASH: re.compile(r"^\s*Flash is successful\s*$", re.MULTILINE),
    FLASH_SH: re.compile(r"^\s*\*\*\* The target \S+ has been flashed successfully\. \*\*\*\s*$", re.MULTILINE),
}

# Files and directories that make a directory an L4T BSP tree.
BSP_MARKERS = ("flash.sh", "bootloader", "kernel", "rootfs", "nv_tegra")
RELEASE_FILES = ("rootfs/etc/nv_tegra_release", "nv_tegra/bsp_version")
# "# R36 (release), REVISION: 4.3, GCID: ..." (nv_tegra_release). bsp_version is assumed to
# carry the same "R36 ... REVISION: 4.3" pair; anything else counts as unreadable.
_RELEASE = re.compile(r"R(\d+)\b[^\n]*?REVISION:\s*(\d+(?:\.\d+)*)")
_LSUSB = re.compile(r"^Bus (\d{3}) Device (\d{3}): ID ([0-9a-fA-F]{4}):([0-9a-fA-F]{4})\s*(.*)$")
_USB_PATH = re.compile(r"^\d+-\d+(\.\d+)*$")
GIB = 1024**3


class JetsonError(Exception):
    """A refusal: the message says what is wrong and what to do."""


def parse_lsusb(text):
    """Devices from plain ``lsusb`` output: dicts of bus, device, vendor, product, description."""
    devices = []
    for line in (text or "").splitlines():
        match = _LSUSB.match(line.strip())
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
        if not _USB_PATH.match(name):  # interfaces (1-2:1.0) and root hubs (usb1) are not devices
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
        boards.append(
            {
                **device,
                "usb_id": f"{device['vendor']}:{device['product']}",
                "module": module["module"],
                "sku": module["sku"],
                "board_configs": list(module["board_configs"]),
            }
        )
    return boards, others


def describe(board):
    where = f"USB path {board['usb_path']}" if board.get("usb_path") else f"bus {board['bus']:03d} device {board['device']:03d}"
    return f"{board.get('module', 'NVIDIA device')} ({board['vendor']}:{board['product']}, {where})"


def no_board_message(others, host="this machine"):
    known = ", ".join(f"{NVIDIA_VENDOR_ID}:{pid} {m['module']}" for pid, m in RECOVERY_MODULES.items())
    message = f"no Jetson board in recovery mode on {host}: no USB device with a recovery id ({known})"
    if others:
        message += "; NVIDIA devices that are not in recovery mode (a booted board, for example): " + ", ".join(
            f"{d['vendor']}:{d['product']}" + (f" at {d['usb_path']}" if d.get("usb_path") else "") for d in others
        )
    return message + ". Connect the board's recovery USB port to this machine and put it in Force Recovery Mode (hold REC, then power on or reset)."


def select_board(boards, board_config=None, usb_path=None, others=(), host="this machine"):
    """The one board to flash, or JetsonError saying why none can be chosen."""
    if not boards:
        raise JetsonError(no_board_message(others, host))
    candidates = boards
    if usb_path:
        candidates = [b for b in boards if b.get("usb_path") == usb_path]
        if not candidates:
            raise JetsonError(
                f"no Jetson board in recovery mode at USB path {usb_path} on {host}; boards in recovery mode: {', '.join(describe(b) for b in boards)}"
            )
    if board_config:
        fitting = [b for b in candidates if board_config in b["board_configs"]]
        if not fitting:
            wrong = candidates[0]
            raise JetsonError(
                f"wrong module for board config {board_config}: found {', '.join(describe(b) for b in candidates)}, "
                f"whose board configs are {', '.join(wrong['board_configs'])}; refusing to flash"
            )
        candidates = fitting
    if len(candidates) > 1:
        raise JetsonError(
            f"{len(candidates)} Jetson boards in recovery mode on {host}: {', '.join(describe(b) for b in candidates)}; "
            "set the USB path of the one to flash (jetson_flash_usb_path), or connect one board at a time"
        )
    return candidates[0]


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


def find_boards(list_devices, board_config=None, usb_path=None, required=True, host="this machine"):
    """A jetson_recovery result from ``list_devices() -> (devices, source)``."""
    devices, source = list_devices()
    boards, others = detect_boards(devices)
    result = {"changed": False, "boards": boards, "other_nvidia_devices": others, "source": source, "selected": None}
    try:
        result["selected"] = select_board(boards, board_config, usb_path, others, host)
    except JetsonError as exc:
        if required:
            note = "" if source != "none" else " (no USB device is visible at all here: neither sysfs nor lsusb lists any)"
            result.update(failed=True, msg=str(exc) + note)
    return result


def flash_command(board_config, storage, usb_instance=None):
    """The argv (relative to the BSP directory) that flashes ``board_config`` to ``storage``."""
    if not board_config or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", board_config):
        raise JetsonError(f"board config {board_config!r} is not a Linux_for_Tegra config name such as jetson-orin-nano-devkit")
    if storage not in STORAGES:
        raise JetsonError(f"storage {storage!r} is not one of: {', '.join(STORAGES)}")
    if usb_instance is not None and not _USB_PATH.match(str(usb_instance)):
        raise JetsonError(f"USB path {usb_instance!r} is not a sysfs USB path such as 1-2 or 3-1.4")
    instance = ["--usb-instance", str(usb_instance)] if usb_instance else []
    if storage in EXTERNAL_DEVICES:
        return [
            f"./{INITRD_FLASH}",
            *instance,
            "--external-device",
            EXTERNAL_DEVICES[storage],
            "-c",
            T234_EXTERNAL_LAYOUT,
            "-p",
            f"-c {T234_QSPI_LAYOUT}",
            "--showlogs",
            "--network",
            "usb0",
            board_config,
            "internal",
        ]
    return [f"./{FLASH_SH}", *instance, board_config, FLASH_SH_ROOTDEV[storage]]


def flash_script(argv):
    """Which NVIDIA script an argv from flash_command runs."""
    return INITRD_FLASH if argv[0].endswith(INITRD_FLASH) else FLASH_SH


def read_release(bsp_dir):
    """(release like 'R36.4.3', file it came from), or (None, None) when no file says."""
    for name in RELEASE_FILES:
        path = os.path.join(bsp_dir, name)
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read(4096)
        except OSError:
            continue
        match = _RELEASE.search(text)
        if match:
            return f"R{match.group(1)}.{match.group(2)}", path
    return None, None


def release_matches(actual, expected):
    """True when every component of ``expected`` (R36.4, R36.4.x, R36.4.3) matches ``actual``."""
    want = expected.strip().upper().lstrip("R").split(".")
    have = actual.strip().upper().lstrip("R").split(".")
    want = [part for part in want if part not in ("X", "*", "")]
    return len(have) >= len(want) and have[: len(want)] == want


def preflight(bsp_dir, board_config, storage, expected_release, min_free_gib=40, default_user=True, euid=None, disk_usage=shutil.disk_usage):
    """Every reason not to flash, as a list of messages (empty: go ahead)."""
    problems = []
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        problems.append(f"not root (uid {euid}): NVIDIA's flash scripts need root; run with become: true")
    if not bsp_dir or not os.path.isdir(bsp_dir):
        problems.append(f"BSP directory {bsp_dir} does not exist: extract Jetson_Linux_{expected_release}_aarch64.tbz2 and give its Linux_for_Tegra directory")
        return problems
    missing = [m for m in BSP_MARKERS if not os.path.exists(os.path.join(bsp_dir, m))]
    if missing:
        problems.append(f"{bsp_dir} is not a Linux_for_Tegra tree: missing {', '.join(missing)}")
        return problems
    actual, source = read_release(bsp_dir)
    if actual is None:
        problems.append(
            f"{bsp_dir}: cannot read the L4T release from {' or '.join(RELEASE_FILES)}: "
            "extract the sample root filesystem into rootfs/ and run apply_binaries.sh"
        )
    elif not release_matches(actual, expected_release):
        problems.append(f"{source}: BSP release is {actual}, expected {expected_release}")
    try:
        argv = flash_command(board_config, storage)
    except JetsonError as exc:
        problems.append(str(exc))
        argv = None
    if argv is not None:
        conf = os.path.join(bsp_dir, f"{board_config}.conf")
        if not os.path.isfile(conf):
            problems.append(f"{conf} does not exist: board config {board_config} is not in this BSP")
        tools = [argv[0][2:]] + ([DEFAULT_USER_SCRIPT] if default_user else [])
        if flash_script(argv) == INITRD_FLASH:
            tools.append(FLASH_SH)  # l4t_initrd_flash.sh calls flash.sh to build the images
        for tool in dict.fromkeys(tools):
            path = os.path.join(bsp_dir, tool)
            if not os.path.isfile(path):
                problems.append(f"{path} is missing")
            elif not os.access(path, os.X_OK):
                problems.append(f"{path} is not executable (chmod +x it, or extract the BSP with tar as root)")
    try:
        free = disk_usage(bsp_dir).free
    except OSError as exc:
        problems.append(f"{bsp_dir}: cannot read free space: {exc}")
    else:
        if free < min_free_gib * GIB:
            problems.append(f"{bsp_dir}: {free / GIB:.1f} GiB free, flashing needs at least {min_free_gib} GiB (system images are built there)")
    return problems


def default_user_command(user, hostname=None):
    """argv of l4t_create_default_user.sh; no -p, so the script sets a random password."""
    if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", user or ""):
        raise JetsonError(f"default user {user!r} is not a valid Linux user name")
    argv = [f"./{DEFAULT_USER_SCRIPT}", "-u", user]
    if hostname:
        argv += ["-n", hostname]
    return [*argv, "--accept-license"]


def redact(text):
    """Output of l4t_create_default_user.sh with any line that mentions a password removed."""
    return "\n".join(line if "password" not in line.lower() else "[line about the password removed]" for line in (text or "").splitlines())


def _passwd_entry(rootfs, user):
    try:
        with open(os.path.join(rootfs, "etc/passwd"), encoding="utf-8") as handle:
            for line in handle:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 7 and fields[0] == user:
                    return int(fields[2]), int(fields[3]), fields[5]
    except OSError:
        pass
    raise JetsonError(f"{rootfs}/etc/passwd has no user {user}: l4t_create_default_user.sh did not create it")


def seed_access(bsp_dir, user, public_keys, chown=None):
    """Install ``public_keys`` for ``user`` in the BSP's rootfs and let it sudo without a password.

    The user's password is random and unknown (l4t_create_default_user.sh without -p), so
    Ansible logs in with the key and becomes root through the NOPASSWD sudoers drop-in.
    Returns the paths written.
    """
    keys = [k.strip() for k in (public_keys if isinstance(public_keys, list) else [public_keys]) if k and k.strip()]
    if not keys:
        raise JetsonError("no SSH public key to pre-seed: without one Ansible cannot reach the board after first boot")
    bad = [k for k in keys if not re.match(r"^(ssh-|ecdsa-|sk-)\S+ \S+", k)]
    if bad:
        raise JetsonError(f"not an SSH public key: {bad[0][:40]}...")
    rootfs = os.path.join(bsp_dir, "rootfs")
    uid, gid, home = _passwd_entry(rootfs, user)
    chown = (os.chown if os.geteuid() == 0 else None) if chown is None else chown
    ssh_dir = os.path.join(rootfs, home.lstrip("/"), ".ssh")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    authorized = os.path.join(ssh_dir, "authorized_keys")
    with open(authorized, "w", encoding="utf-8") as handle:
        handle.write("\n".join(keys) + "\n")
    os.chmod(authorized, 0o600)
    sudoers = os.path.join(rootfs, "etc/sudoers.d", f"90-n3x-{user}")
    os.makedirs(os.path.dirname(sudoers), exist_ok=True)
    with open(sudoers, "w", encoding="utf-8") as handle:
        handle.write(f"# Written by n3x.cluster.jetson_flash: Ansible becomes root with the SSH key.\n{user} ALL=(ALL) NOPASSWD:ALL\n")
    os.chmod(sudoers, 0o440)
    if chown:
        chown(ssh_dir, uid, gid)
        chown(authorized, uid, gid)
    return [authorized, sudoers]


def flash_result(rc, output, argv):
    """{'flashed': bool, 'msg': str}: flashed only when the script exited 0 and printed its success line."""
    script = flash_script(argv)
    success = SUCCESS_LINES[script].search(output or "") is not None
    if rc == 0 and success:
        return {"flashed": True, "msg": f"{script} reported success"}
    if rc == 0:
        return {"flashed": False, "msg": f"{script} exited 0 but never printed its success line; the board is NOT known to be flashed"}
    tail = " | ".join(line.strip() for line in (output or "").strip().splitlines()[-5:])
    return {"flashed": False, "msg": f"{script} failed with exit code {rc}; the board is NOT flashed: {tail}"}
