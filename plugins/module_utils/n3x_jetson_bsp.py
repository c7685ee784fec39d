# Copyright: n3x developers
# MIT License
"""An L4T BSP tree (Linux_for_Tegra) as NVIDIA's R36 scripts read it: release, module family,
the flash table, the Longhorn partition layout and the flashing host's preflight.

Pure Python, no Ansible. Every rule names the BSP file or guide section it follows; the BSP
copies read are Seeed-Studio/Linux_for_Tegra and johnnynunez/Linux_for_Tegra (R36.2) on GitHub,
and the Jetson Linux Developer Guide r36.4 (Quick Start, Flashing Support).
"""

from __future__ import annotations

import os
import re
import stat
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_lab import binfmt_enabled

INITRD_FLASH = "tools/kernel_flash/l4t_initrd_flash.sh"
FLASH_SH = "flash.sh"
DEFAULT_USER_SCRIPT = "tools/l4t_create_default_user.sh"
APPLY_BINARIES = "apply_binaries.sh"
PREREQUISITES = "tools/l4t_flash_prerequisites.sh"
# The R36 layouts the Quick Start's commands name. R35 used tools/kernel_flash/flash_l4t_external.xml
# and bootloader/t186ref/cfg/flash_t234_qspi.xml (Quick Start r35.5), so R35 has no row here.
T234_NVME_LAYOUT = "tools/kernel_flash/flash_l4t_t234_nvme.xml"
T234_QSPI_LAYOUT = "bootloader/generic/cfg/flash_t234_qspi.xml"
LONGHORN_LAYOUT = "tools/kernel_flash/n3x_flash_l4t_t234_nvme_longhorn.xml"
SUPPORTED_MAJORS = (36,)
BSP_RELEASE_FILE = "nv_tegra/nv_tegra_release"
ROOTFS_RELEASE_FILE = "rootfs/etc/nv_tegra_release"
BSP_MARKERS = ("flash.sh", "bootloader", "kernel", "rootfs", "nv_tegra")
# "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: ..."
_RELEASE_LINE = re.compile(r"# R(\d+) \(release\), REVISION: (\d+)\.(\d+)(?:,.*)?")
_CONFIG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
# Board configs name their parent as `source "${LDK_DIR}/p3767.conf.common";`.
_SOURCE = re.compile(r'\s*source\s+"\$\{LDK_DIR\}/([A-Za-z0-9][A-Za-z0-9._+-]*)"\s*;?\s*')
_READ_LIMIT = 256 * 1024


class BspError(Exception):
    """A refusal about the BSP tree or the flash settings."""


@dataclass(frozen=True)
class Family:
    name: str
    module: str
    common: str
    recovery_ids: tuple
    sd_ids: tuple
    model_pattern: str
    board_id: str = ""
    # BOARDSKU -> the recovery ids a module of that SKU shows (empty: not checked).
    sku_ids: dict = field(default_factory=dict)


# Which common file a board config sources decides the module (p3768-0000-p3767-0000-a0.conf
# sources p3767.conf.common; p3737-0000-p3701-0000.conf sources p3737-0000-p3701-0000.conf.common,
# which sources p3701.conf.common). Recovery ids: fill_devpaths() in l4t_initrd_flash.sh
# (Seeed-Studio/Linux_for_Tegra, R35.6.1): 7023 AGX Orin, 7223 AGX Orin 32GB, 7323 Orin NX 16GB
# (p3767-0000), 7423 Orin NX 8GB (p3767-0001), 7523 Orin Nano 8GB (p3767-0003; the devkit's
# p3767-0005 module, the one with the microSD slot, shows the same id), 7623 Orin Nano 4GB.
# BOARDID and BOARDSKU: the environment variables table at the end of
# tools/kernel_flash/README_initrd_flash.txt (R36.2, johnnynunez/Linux_for_Tegra); the SKU of each
# p3767 recovery id from fill_devpaths()' comments (p3767-0000 .. -0004), and 0005 (the devkit
# module, "Nano 8GB" in that table) shows 7523 too. Which AGX Orin SKU shows 7023 or 7223 is in
# neither file, so AGX Orin SKUs are not matched against the boards.
FAMILIES = {
    "p3767": Family(
        "p3767",
        "Jetson Orin NX/Nano",
        "p3767.conf.common",
        ("7323", "7423", "7523", "7623"),
        ("7523",),
        r"Orin (Nano|NX)",
        "3767",
        {"0000": ("7323",), "0001": ("7423",), "0003": ("7523",), "0004": ("7623",), "0005": ("7523",)},
    ),
    "p3701": Family("p3701", "Jetson AGX Orin", "p3701.conf.common", ("7023", "7223"), ("7023", "7223"), r"AGX Orin", "3701"),
}


@dataclass(frozen=True)
class FlashMethod:
    """One row of the flash table: how NVIDIA flashes this module family to this storage."""

    family: str
    storage: str
    tool: str
    rootdev: str
    external_device: str = ""
    qspi: bool = False
    source: str = ""
    notes: tuple = field(default_factory=tuple)


_QUICK_START = "Jetson Linux r36.4 Quick Start, 'To flash the Jetson developer kit operating software'"
# (family, storage) -> row. Every other pair is refused by flash_method().
FLASH_TABLE = {
    ("p3767", "nvme"): FlashMethod("p3767", "nvme", INITRD_FLASH, "internal", "nvme0n1p1", True, _QUICK_START),
    ("p3767", "usb"): FlashMethod("p3767", "usb", INITRD_FLASH, "internal", "sda1", True, _QUICK_START),
    ("p3767", "sd"): FlashMethod("p3767", "sd", INITRD_FLASH, "internal", "mmcblk0p1", True, _QUICK_START),
    ("p3701", "emmc"): FlashMethod("p3701", "emmc", FLASH_SH, "internal", "", False, _QUICK_START),
    ("p3701", "nvme"): FlashMethod("p3701", "nvme", INITRD_FLASH, "external", "nvme0n1p1", False, _QUICK_START),
    ("p3701", "usb"): FlashMethod("p3701", "usb", INITRD_FLASH, "external", "sda1", False, _QUICK_START),
    ("p3701", "sd"): FlashMethod("p3701", "sd", INITRD_FLASH, "external", "mmcblk0p1", False, _QUICK_START),
}
STORAGES = ("nvme", "usb", "sd", "emmc")
_REFUSALS = {
    ("p3767", "emmc"): "Jetson Orin NX/Nano modules have no eMMC: flash them to nvme, usb or sd (the devkit's microSD slot)",
}


def read_small(path, limit=_READ_LIMIT):
    """Text of a small regular file; BspError for anything else (a device, a FIFO, a huge file)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # never open a FIFO or a device
            raise BspError(f"{path} is not a regular file")
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise BspError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise BspError(f"{path} is larger than {limit} bytes: not an L4T file")
    return data.decode("utf-8", errors="replace")


def parse_release(text, path):
    """'R36.4.3' from the first line of an nv_tegra_release file."""
    first = (text or "").split("\n", 1)[0].strip()
    match = _RELEASE_LINE.fullmatch(first)
    if not match:
        raise BspError(f"{path}: first line {first[:80]!r} is not '# R<major> (release), REVISION: <x>.<y>, ...'")
    return f"R{match.group(1)}.{match.group(2)}.{match.group(3)}"


def bsp_release(bsp_dir):
    """The BSP's release, checked against the rootfs's (the proof that apply_binaries.sh ran)."""
    bsp_file = os.path.join(bsp_dir, BSP_RELEASE_FILE)
    release = parse_release(read_small(bsp_file), bsp_file)
    major = int(release[1:].split(".", maxsplit=1)[0])
    if major not in SUPPORTED_MAJORS:
        raise BspError(
            f"{bsp_file}: {release}: n3x has a flash table for R36 only "
            "(R35 uses tools/kernel_flash/flash_l4t_external.xml and bootloader/t186ref/cfg, Quick Start r35.5)"
        )
    rootfs_file = os.path.join(bsp_dir, ROOTFS_RELEASE_FILE)
    if not os.path.lexists(rootfs_file):
        raise BspError(f"{rootfs_file} does not exist: apply_binaries.sh has not run on this rootfs (run it, or let jetson_flash prepare the BSP)")
    rootfs_release = parse_release(read_small(rootfs_file), rootfs_file)
    if rootfs_release != release:
        raise BspError(f"{rootfs_file} says {rootfs_release} but {bsp_file} says {release}: run apply_binaries.sh of this BSP again")
    return release


def release_matches(actual, expected):
    """True when every component of ``expected`` (R36.4, R36.4.x, R36.4.3) matches ``actual``."""
    want = [p for p in expected.strip().upper().lstrip("R").split(".") if p not in ("X", "*", "")]
    have = actual.strip().upper().lstrip("R").split(".")
    return bool(want) and len(have) >= len(want) and have[: len(want)] == want


def _inside(root, path):
    root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def config_chain(bsp_dir, board_config, depth=8):
    """The files ``<board_config>.conf`` sources, itself first, as NVIDIA's scripts do (read, never run)."""
    if not isinstance(board_config, str) or not _CONFIG_NAME.fullmatch(board_config):
        raise BspError(f"board config {board_config!r} is not a Linux_for_Tegra config name such as jetson-orin-nano-devkit")
    chain, name = [], f"{board_config}.conf"
    while name:
        path = os.path.join(bsp_dir, name)
        if name in chain:
            raise BspError(f"{path}: sources itself in a loop ({' -> '.join(chain)})")
        if len(chain) >= depth:
            raise BspError(f"{bsp_dir}/{board_config}.conf: more than {depth} nested source lines")
        if not os.path.lexists(path):
            if not chain:
                raise BspError(f"{path} does not exist: board config {board_config} is not in this BSP")
            raise BspError(f"{path} does not exist, but {chain[-1]} sources it")
        if not _inside(bsp_dir, path):
            raise BspError(f"{path} points outside {bsp_dir}; refusing to read it")
        chain.append(name)
        parents = [m.group(1) for m in map(_SOURCE.fullmatch, read_small(path).splitlines()) if m]
        name = parents[0] if parents else None
    return chain


def module_family(bsp_dir, board_config):
    """The Family whose common file the config sources, or BspError naming what it sources."""
    chain = config_chain(bsp_dir, board_config)
    for family in FAMILIES.values():
        if family.common in chain:
            return family
    raise BspError(
        f"{bsp_dir}/{board_config}.conf sources {' -> '.join(chain[1:]) or 'nothing'}: neither "
        f"{' nor '.join(f.common for f in FAMILIES.values())}, so n3x has no flash table for it"
    )


def flash_method(family, storage):
    """The table row for (family, storage); BspError for every pair the table has no row for."""
    if storage not in STORAGES:
        raise BspError(f"storage {storage!r} is not one of: {', '.join(STORAGES)}")
    row = FLASH_TABLE.get((family.name, storage))
    if row is None:
        reason = _REFUSALS.get((family.name, storage), f"{family.module} has no {storage} flash method in the Quick Start")
        supported = ", ".join(s for f, s in FLASH_TABLE if f == family.name)
        raise BspError(f"{reason}; {family.module} flashes to: {supported}")
    return row


_SIZE = re.compile(r"([1-9][0-9]{0,15})(GiB|MiB|KiB)?")


def check_size(value):
    """A size as l4t_initrd_flash.sh -S takes it (bytes, or KiB/MiB/GiB shorthands)."""
    if not isinstance(value, str) or not _SIZE.fullmatch(value):
        raise BspError(f"APP size {value!r} is not a size such as 64GiB (bytes, KiB, MiB or GiB, as l4t_initrd_flash.sh -S takes)")
    return value


def flash_command(method, board_config, usb_instance=None, layout=None, app_size=None, massflash=None, phase=None):
    """The argv (relative to the BSP directory) of the table row, as the Quick Start writes it.

    ``massflash`` N with ``phase`` 'no-flash' or 'flash-only' gives the two commands of
    README_initrd_flash.txt's massflash workflow; --showlogs is left out there, because with
    --massflash it spawns a gnome-terminal per board (l4t_initrd_flash.func usage).
    """
    if usb_instance is not None and not re.fullmatch(r"\d+-\d+(\.\d+)*", str(usb_instance)):
        raise BspError(f"USB path {usb_instance!r} is not a sysfs USB path such as 1-2 or 3-1.4")
    if method.tool == FLASH_SH:
        if massflash or layout or app_size:
            raise BspError("flash.sh (AGX Orin eMMC) takes no data partition layout and no massflash in n3x")
        instance = ["--usb-instance", str(usb_instance)] if usb_instance else []
        return [f"./{FLASH_SH}", *instance, board_config, method.rootdev]
    argv = [f"./{INITRD_FLASH}"]
    if massflash:
        if phase not in ("no-flash", "flash-only") or usb_instance:
            raise BspError("massflash runs as --no-flash then --flash-only, for every board in recovery mode (no --usb-instance)")
        argv += [f"--{phase}", "--massflash", str(int(massflash))]
    elif usb_instance:
        argv += ["--usb-instance", str(usb_instance)]
    argv += ["--external-device", method.external_device, "-c", layout or T234_NVME_LAYOUT]
    if method.qspi:
        argv += ["-p", f"-c {T234_QSPI_LAYOUT}"]
    if app_size:
        argv += ["-S", check_size(app_size)]
    if not massflash:
        argv += ["--showlogs"]
    return [*argv, "--network", "usb0", board_config, method.rootdev]


def command_files(method, layout=None):
    """Every BSP file the command runs or names, relative to the BSP directory."""
    if method.tool == FLASH_SH:
        return [FLASH_SH]
    files = [INITRD_FLASH, FLASH_SH, layout or T234_NVME_LAYOUT]
    if method.qspi:
        files.append(T234_QSPI_LAYOUT)
    return files


# Offline image builds (README_initrd_flash.txt, Workflow 2 "Without device connected (offline
# mode)" and Workflow 7, whose massflash example uses it): the board's identity comes from these
# variables instead of the EEPROM of a board in recovery mode. The first four are the README's
# table; generate_rcm_bootcmd() in l4t_initrd_flash_internal.sh (R36.2) also exports CHIP_SKU,
# RAMCODE_ID and RAMCODE to flash.sh, so they may be given too.
_IDENTITY = {
    "BOARDID": re.compile(r"[0-9]{4}"),
    "BOARDSKU": re.compile(r"[0-9]{4}"),
    "FAB": re.compile(r"[0-9A-Z]{3}"),
    "BOARDREV": re.compile(r"([A-Z]\.[0-9])?"),
    "CHIP_SKU": re.compile(r"([0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){3})?"),
    "RAMCODE_ID": re.compile(r"([0-9]{1,2})?"),
    "RAMCODE": re.compile(r"([0-9]{1,2})?"),
}
_OPTIONAL = ("BOARDREV", "CHIP_SKU", "RAMCODE_ID", "RAMCODE")


def board_identity(identity, family):
    """The environment of an offline image build for ``family``, or BspError naming the field."""
    if not isinstance(identity, dict):
        raise BspError(f"board identity {identity!r} is not a mapping of BOARDID, BOARDSKU, FAB and BOARDREV")
    unknown = sorted(str(k) for k in identity if k not in _IDENTITY)
    if unknown:
        raise BspError(f"board identity: unknown key(s) {', '.join(unknown)}; the offline build reads {', '.join(_IDENTITY)}")
    env = {}
    for key, pattern in _IDENTITY.items():
        value = identity.get(key)
        value = "" if value is None else str(value)
        if not pattern.fullmatch(value) or (key not in _OPTIONAL and not value):
            raise BspError(f"board identity: {key} {value!r} is not a value of the table at the end of tools/kernel_flash/README_initrd_flash.txt")
        if value:
            env[key] = value
    if env["BOARDID"] != family.board_id:
        raise BspError(f"board identity: BOARDID {env['BOARDID']} is not {family.board_id}, the {family.module} the board config is for")
    if family.sku_ids and env["BOARDSKU"] not in family.sku_ids:
        raise BspError(f"board identity: BOARDSKU {env['BOARDSKU']} is not a {family.module} SKU ({', '.join(family.sku_ids)})")
    return env


def honours_usb_instance(bsp_dir):
    """True when this BSP's l4t_initrd_flash.sh skips boards other than --usb-instance.

    R35.6.1's fill_devpaths() has `[ "${usb_instance}" != "${busnum}-${devpath}" ] && continue`;
    versions without it flash whichever board they find. Read, never run.
    """
    try:
        text = read_small(os.path.join(bsp_dir, INITRD_FLASH))
    except BspError:
        return False
    return '"${usb_instance}" != "${busnum}-${devpath}"' in text


# --- the Longhorn data partition layout -----------------------------------------------------------

LONGHORN_PARTITION = "longhorn"


def longhorn_layout(xml_text, source, min_bytes=1024**3):
    """NVIDIA's flash_l4t_t234_nvme.xml with APP fixed in size and a `longhorn` partition after it.

    In the BSP's layout APP (id 1, rootfs) comes last and grows to fill the disk
    (<allocation_attribute> 0x808 </allocation_attribute>; 0x800 is the fill flag). Here APP keeps
    <size> APPSIZE </size> (l4t_initrd_flash.sh -S sets it) with a fixed allocation (8), and a new
    `longhorn` data partition after it takes the rest (0x808), before secondary_gpt.
    """
    if "<!DOCTYPE" in xml_text or "<!ENTITY" in xml_text:  # NVIDIA's layouts have neither: no entity tricks
        raise BspError(f"{source}: has a DOCTYPE or ENTITY declaration; NVIDIA's layouts have none")
    try:
        root = ET.fromstring(xml_text)  # noqa: S314 - size-capped, entity-free, the user's own BSP file
    except ET.ParseError as exc:
        raise BspError(f"{source}: not a partition layout XML: {exc}") from None
    devices = root.findall("device")
    if root.tag != "partition_layout" or len(devices) != 1 or devices[0].get("type") != "external":
        raise BspError(f'{source}: expected one <device type="external"> in <partition_layout>, as flash_l4t_t234_nvme.xml has')
    device = devices[0]
    partitions = device.findall("partition")
    names = [p.get("name") for p in partitions]
    if LONGHORN_PARTITION in names:
        raise BspError(f"{source}: already has a partition named {LONGHORN_PARTITION}")
    if "APP" not in names or names[-1] != "secondary_gpt":
        raise BspError(f"{source}: no APP partition, or secondary_gpt is not last: not NVIDIA's external layout")
    app = partitions[names.index("APP")]
    attribute = app.find("allocation_attribute")
    size = app.find("size")
    if attribute is None or attribute.text.strip().lower() != "0x808" or size is None or size.text.strip() != "APPSIZE":
        raise BspError(f"{source}: APP is not the growing 0x808 partition of size APPSIZE: an unknown layout, refusing to change it")
    attribute.text = " 8 "
    longhorn = ET.Element("partition", {"name": LONGHORN_PARTITION, "type": "data"})
    for tag, text in (
        ("allocation_policy", "sequential"),
        ("filesystem_type", "basic"),
        ("size", str(int(min_bytes))),
        ("file_system_attribute", "0"),
        ("allocation_attribute", "0x808"),
        ("align_boundary", "16384"),
        ("percent_reserved", "0"),
        ("description", "n3x: Longhorn data; takes the space after APP. Generated from " + os.path.basename(source)),
    ):
        ET.SubElement(longhorn, tag).text = f" {text} "
    device.insert(list(device).index(partitions[-1]), longhorn)
    ET.indent(root, space="    ")
    body = ET.tostring(root, encoding="unicode")
    return f"<!-- Generated by n3x.cluster (jetson_flash) from {os.path.basename(source)}: do not edit. -->\n{body}\n"


# --- the flashing host ---------------------------------------------------------------------------

# Commands NVIDIA's scripts call, with the Ubuntu package tools/l4t_flash_prerequisites.sh installs
# for each; sshpass, abootimg and exportfs are also checked by l4t_initrd_flash*.sh itself.
HOST_TOOLS = {
    "abootimg": "abootimg",
    "cpio": "cpio",
    "cpp": "cpp",
    "dtc": "device-tree-compiler",
    "lbzip2": "lbzip2",
    "lz4c": "lz4",
    "mkfs.vfat": "dosfstools",
    "mkpasswd": "whois",
    "openssl": "openssl",
    "python3": "python3",
    "strings": "binutils",
    "udevadm": "udev",
    "uuidgen": "uuid-runtime",
    "xmllint": "libxml2-utils",
}
NETWORK_TOOLS = {"sshpass": "sshpass", "exportfs": "nfs-kernel-server", "showmount": "nfs-kernel-server"}
# l4t_create_default_user.sh checks this exact path ("please install qemu-user-static package").
QEMU_STATIC = "/usr/bin/qemu-aarch64-static"
# ...and runs groupadd and useradd with `chroot` in the arm64 rootfs, which works on an x86-64
# host only through binfmt_misc (tools/l4t_flash_prerequisites.sh installs binfmt-support and
# qemu-user-static for it).
BINFMT_ENTRY = "qemu-aarch64"
# Host distributions NVIDIA supports for flashing JetPack 6 (R36): Ubuntu 20.04 and 22.04
# (SDK Manager's JetPack 6 host list; l4t_flash_prerequisites.sh of R36.2 only picks package names
# by DISTRIB_RELEASE: python2 from 22.04 on, lz4 from 20.04 on).
SUPPORTED_HOSTS = {36: ("20.04", "22.04")}


def host_tools(storage):
    """{command: package} on the flashing host for every flash table row of ``storage``: the
    preflight checks them, and the jetson_flash role installs them (the prerequisites script)
    when one is missing."""
    tools = dict(HOST_TOOLS)
    if any(row.tool == INITRD_FLASH for (_family, row_storage), row in FLASH_TABLE.items() if row_storage == storage):
        tools.update(NETWORK_TOOLS)  # --network usb0: ssh to the initrd and an NFS export
    return tools


def host_problems(method, machine, which, exists=os.path.exists, binfmt=binfmt_enabled):
    """Refusals about the flashing host: its architecture and the tools the scripts call."""
    problems = []
    if machine not in ("x86_64", "amd64"):
        problems.append(
            f"this host is {machine}: NVIDIA's flash tools (bootloader/tegrarcm_v2, tegraflash) are x86-64 programs; flash from an x86-64 Ubuntu host"
        )
    missing = sorted((tool, package) for tool, package in host_tools(method.storage).items() if not which(tool))
    if missing:
        problems.append(
            "missing host tools: "
            + ", ".join(f"{tool} (package {package})" for tool, package in missing)
            + f": run {PREREQUISITES} (the jetson_flash role does when it prepares the BSP from jetson_flash_bsp_tarball)"
        )
    if not exists(QEMU_STATIC):
        problems.append(f"{QEMU_STATIC} is missing: l4t_create_default_user.sh needs it (package qemu-user-static)")
    if not binfmt(BINFMT_ENTRY):
        problems.append(
            f"binfmt_misc has no enabled {BINFMT_ENTRY} entry: l4t_create_default_user.sh runs useradd in a chroot of the arm64 "
            "rootfs, which needs it (packages binfmt-support and qemu-user-static; then update-binfmts --enable)"
        )
    return problems


def host_warnings(release, os_release):
    """A warning when the host is not a distribution NVIDIA supports for this release."""
    major = int(release[1:].split(".", maxsplit=1)[0])
    supported = SUPPORTED_HOSTS.get(major, ())
    distro, version = os_release.get("ID", ""), os_release.get("VERSION_ID", "")
    if distro == "ubuntu" and version in supported:
        return []
    names = " and ".join(f"Ubuntu {v}" for v in supported)
    this = os_release.get("PRETTY_NAME") or distro or "unknown"
    return [f"this host is {this}: NVIDIA supports flashing {release} from {names} only; it may work, but is untested by NVIDIA"]


def read_os_release(path="/etc/os-release"):
    fields = {}
    try:
        text = read_small(path, 64 * 1024)
    except BspError:
        return fields
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Z_]+", key):
            fields[key] = value.strip().strip('"')
    return fields


@dataclass
class Plan:
    """Everything decided before a board is touched."""

    release: str
    family: Family
    method: FlashMethod
    argv: list
    layout: str
    problems: list
    warnings: list


def plan(bsp_dir, board_config, storage, expected_release, data_partition=False, app_size=None, usb_instance=None, massflash=None, phase=None):
    """The flash command for this BSP and board config, or BspError naming the first refusal."""
    if not bsp_dir or not os.path.isdir(bsp_dir):
        raise BspError(f"BSP directory {bsp_dir} does not exist: give the Linux_for_Tegra directory (or let jetson_flash prepare it from the tarballs)")
    missing = [m for m in BSP_MARKERS if not os.path.lexists(os.path.join(bsp_dir, m))]
    if missing:
        raise BspError(f"{bsp_dir} is not a Linux_for_Tegra tree: missing {', '.join(missing)}")
    release = bsp_release(bsp_dir)
    if not release_matches(release, expected_release):
        raise BspError(f"{bsp_dir}/{BSP_RELEASE_FILE}: BSP release is {release}, expected {expected_release}")
    family = module_family(bsp_dir, board_config)
    method = flash_method(family, storage)
    layout = None
    if data_partition:
        if method.tool != INITRD_FLASH:
            raise BspError(f"a data partition needs an external device layout; {family.module} {storage} is flashed with flash.sh")
        if not app_size:
            raise BspError("a data partition needs a fixed APP (rootfs) size, such as 64GiB (jetson_flash_app_size)")
        layout = LONGHORN_LAYOUT
    argv = flash_command(method, board_config, usb_instance, layout, app_size if data_partition else None, massflash, phase)
    problems = []
    for name in command_files(method, None):
        path = os.path.join(bsp_dir, name)
        if not os.path.isfile(path):
            problems.append(f"{path} is missing: the command names it")
        elif name.endswith(".sh") and not os.access(path, os.X_OK):
            problems.append(f"{path} is not executable (extract the BSP with tar -xp as root)")
    return Plan(release, family, method, argv, layout or T234_NVME_LAYOUT, problems, [])
