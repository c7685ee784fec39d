# Copyright: n3x developers
# MIT License (see galaxy.yml)
"""QEMU lab VMs: command lines, MACs, ports, lab segments and the VM lifecycle.

Pure Python (no Ansible imports). Every file of a VM lives in one lab directory:
``NAME.qcow2`` (overlay on the cached image), ``NAME.esp.qcow2`` and ``NAME.vars.fd``
(UEFI only), ``NAME.qmp`` (QMP socket), ``NAME.serial.log``, ``NAME.pid`` and
``NAME.json`` (the definition and forwarded SSH port of the running VM).

Lab segments are QEMU socket netdevs on a loopback multicast group: a rootless hub per
segment that passes 802.1Q tags and bonds (see shared lab findings). All NICs that a
profile lists (bond members included) go on the same segment by default, because bond
members on separate hubs partition the bond after a failover.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

QEMU = "qemu-system-x86_64"

# Per guest architecture: the QEMU binary, machine, CPU model under TCG and serial console.
# cortex-a72: `-cpu max` emulates pointer authentication, which costs a lot under TCG.
ARCHES = {
    "amd64": {"qemu": QEMU, "machine": "q35", "tcg_cpu": None, "console": "ttyS0"},
    "arm64": {"qemu": "qemu-system-aarch64", "machine": "virt", "tcg_cpu": "cortex-a72", "console": "ttyAMA0"},
}
HOST_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(os.uname().machine, os.uname().machine)
BINFMT_DIR = "/proc/sys/fs/binfmt_misc"


def binfmt_enabled(name, binfmt_dir=BINFMT_DIR):
    """True when binfmt_misc has the entry ``name`` (qemu-aarch64, ...) and it is enabled: programs
    of that architecture then run here, in a chroot too, through qemu-user-static."""
    try:
        with open(os.path.join(binfmt_dir, name), encoding="ascii", errors="replace") as handle:
            return handle.readline().strip() == "enabled"
    except OSError:
        return False


HOST_TOOLS = {
    QEMU: "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "qemu-img": "qemu-utils",
    "mcopy": "mtools",
}

OVMF_CODE_CANDIDATES = [
    "/usr/share/OVMF/OVMF_CODE_4M.fd",
    "/usr/share/OVMF/OVMF_CODE.fd",
]
OVMF_VARS_CANDIDATES = [
    "/usr/share/OVMF/OVMF_VARS_4M.fd",
    "/usr/share/OVMF/OVMF_VARS.fd",
]

LAB_FORMAT = 2
# disk: OVMF boots the bootloader on the image's own GPT disk (the A/B image's GRUB).
BOOT_MODES = ("direct", "uefi", "disk")
ACCELS = ("auto", "kvm", "tcg")
DEFAULT_SEGMENT = "lab"
# Used with fullmatch (`$` would match before a trailing newline).
MAC_RE = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")
NIC_RE = re.compile(r"eth([1-9][0-9]*)")
# A VM name is its guest's hostname, a file name in the lab directory and part of QEMU
# options (-name NAME,process=...): one DNS label, so no ',', '/', '..' or whitespace.
VM_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

# Kernel arguments every lab VM needs: NICs named eth0.. in PCI order, serial console,
# a quiet boot (printing to an emulated UART is slow under TCG).
BASE_CMDLINE = "root=LABEL=n3x-root rw console=ttyS0 net.ifnames=0 quiet loglevel=0 systemd.show_status=0"

# PCI slots: fixed so that eth0 (management), eth1, eth2... keep their order.
DISK_SLOT = 0x04
ESP_SLOT = 0x05
DATA_SLOT = 0x06
# disk boot (an edge board's A/B disk): the board's watchdog, QEMU's i6300esb (reset on expiry).
WATCHDOG_SLOT = 0x07
WATCHDOG_DEVICE = "i6300esb"
# The data disk's virtio serial: the guest sees it as /dev/disk/by-id/virtio-n3x-data.
DATA_DISK_SERIAL = "n3x-data"
SIZE_RE = re.compile(r"[1-9][0-9]*[MG]")
NIC_SLOT_BASE = 0x10


class LabError(Exception):
    """Raised with a message meant for the user."""


def require_tools(tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pkgs = sorted({HOST_TOOLS.get(t, t) for t in missing})
        raise LabError("missing host tools: {} (install the Debian packages: apt-get install {})".format(", ".join(missing), " ".join(pkgs)))


def find_ovmf(code=None, vars_template=None):
    """Paths of the OVMF firmware and its variable store template."""
    code = code or next((p for p in OVMF_CODE_CANDIDATES if os.path.isfile(p)), None)
    vars_template = vars_template or next((p for p in OVMF_VARS_CANDIDATES if os.path.isfile(p)), None)
    if not code or not vars_template or not os.path.isfile(code) or not os.path.isfile(vars_template):
        raise LabError("UEFI firmware not found (install the Debian package: apt-get install ovmf)")
    return code, vars_template


# ---------------------------------------------------------------- addresses ---------


def mac_for(node, nic, salt=0):
    """Deterministic MAC in QEMU's 52:54:00 range for a node's NIC."""
    digest = hashlib.sha256(f"{node}/{nic}/{salt}".encode()).digest()
    return f"52:54:00:{digest[0]:02x}:{digest[1]:02x}:{digest[2]:02x}"


def normalize_mac(mac):
    mac = str(mac).strip().lower().replace("-", ":")
    if not MAC_RE.fullmatch(mac):
        raise LabError(f"invalid MAC address: {mac!r}")
    if int(mac[:2], 16) & 1:
        raise LabError(f"MAC address {mac} is multicast; a NIC needs a unicast address")
    return mac


def allocate_macs(layout, given=None):
    """{node: {nic: mac}} for every NIC (eth0 included), unique across the lab.

    layout is {node: [lab NIC names]}; given is {node: mac} (a profile's mac_addresses),
    used for the node's first lab NIC. Derived MACs that collide are rehashed.
    """
    given = given or {}
    result = {}
    used = {}
    for node in sorted(layout):
        result[node] = {}
        nics = ["eth0", *list(layout[node])]
        for index, nic in enumerate(nics):
            if index == 1 and node in given:
                mac = normalize_mac(given[node])
            else:
                salt = 0
                mac = mac_for(node, nic, salt)
                while mac in used or mac in {normalize_mac(m) for m in given.values()}:
                    salt += 1
                    mac = mac_for(node, nic, salt)
            if mac in used:
                raise LabError(f"MAC {mac} of {node}/{nic} is also used by {used[mac]}")
            used[mac] = f"{node}/{nic}"
            result[node][nic] = mac
    return result


def lab_id(lab_dir):
    return os.path.realpath(os.path.expanduser(lab_dir))


# UDP ports of lab segments: below Linux's ephemeral range (32768-60999), which the kernel
# hands to other programs' sockets; QEMU could not bind a segment port one of them holds.
SEGMENT_PORTS = (20000, 32000)


def segment_endpoint(lab_dir, segment):
    """(multicast group, UDP port) of a lab segment: derived from the lab directory, so
    every VM of one lab meets on the same hub and two labs on one host do not."""
    digest = hashlib.sha256((f"{lab_id(lab_dir)}\0{segment}").encode()).digest()
    # Last octet 1..254: never the group's network or broadcast-looking address.
    group = f"230.{digest[0]}.{digest[1]}.{1 + digest[2] % 254}"
    low, high = SEGMENT_PORTS
    port = low + int.from_bytes(digest[3:5], "big") % (high - low)
    return group, port


def port_free(port, host="127.0.0.1"):
    """True when nothing listens on host:port (as QEMU's hostfwd would bind it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Like QEMU: SO_REUSEADDR ignores TIME_WAIT leftovers of earlier SSH connections.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def free_port(host="127.0.0.1", avoid=()):
    """A TCP port that nothing listens on now (the kernel picks it)."""
    for _attempt in range(50):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        finally:
            sock.close()
        if port not in avoid:
            return port
    raise LabError(f"no free TCP port on {host}")


# ---------------------------------------------------------------- definitions -------


def normalize_nics(node, nics, mac=None):
    """Lab NICs of a node as [{name, segment, mac}], eth1..ethN in order.

    nics: names ('eth1') or dicts {name, segment?, mac?}; mac: the node's given MAC, for
    its first lab NIC.
    """
    out = []
    for nic in nics or []:
        spec = {"name": nic} if isinstance(nic, str) else dict(nic)
        name = spec.get("name", "")
        if not isinstance(name, str) or not NIC_RE.fullmatch(name):
            raise LabError(f"lab NIC names must be eth1, eth2, ...; got {name!r} for {node}")
        out.append(
            {
                "name": name,
                "segment": spec.get("segment") or DEFAULT_SEGMENT,
                "mac": normalize_mac(spec["mac"]) if spec.get("mac") else None,
            }
        )
    out.sort(key=lambda n: int(NIC_RE.fullmatch(n["name"]).group(1)))
    names = [n["name"] for n in out]
    expected = [f"eth{i}" for i in range(1, len(out) + 1)]
    if names != expected:
        # The guest names NICs by PCI order: a gap would shift every later name.
        raise LabError(f"lab NICs of {node} must be {expected}, got {names}")
    for index, nic in enumerate(out):
        if nic["mac"] is None:
            nic["mac"] = normalize_mac(mac) if (index == 0 and mac) else mac_for(node, nic["name"])
    return out


def image_arch(image_dir):
    """The architecture a lab image was built for (its manifest), amd64 for older images."""
    try:
        with open(os.path.join(image_dir, "manifest.json")) as fh:
            return json.load(fh).get("spec", {}).get("arch", "amd64")
    except (OSError, ValueError):
        return "amd64"


def check_vm_name(name):
    if not isinstance(name, str) or not VM_NAME_RE.fullmatch(name):
        raise LabError(f"name: {name!r} is not a lab VM name (a hostname: lower-case letters, digits and '-', like server-1)")
    return name


def qemu_value(text):
    """text as a value inside a QEMU option list (-drive file=...): commas doubled."""
    return str(text).replace(",", ",,")


# These files are written as NAME.SUFFIX.tmp and renamed once complete, so an interrupted
# write never leaves half a disk or state file under the real name.
STAGED_FILES = ("overlay", "data", "esp", "vars", "state")
TEMP_SUFFIX = ".tmp"


def vm_paths(lab_dir, name):
    base = os.path.join(os.path.expanduser(lab_dir), check_vm_name(name))
    paths = {
        "dir": os.path.expanduser(lab_dir),
        "overlay": base + ".qcow2",
        "data": base + ".data.qcow2",
        "esp": base + ".esp.img",
        "vars": base + ".vars.fd",
        "qmp": base + ".qmp",
        "serial": base + ".serial.log",
        "pid": base + ".pid",
        "state": base + ".json",
        # The systemd-boot entry on its way onto the ESP copy (write_boot_entry).
        "entry": base + ".esp.img.entry.conf",
    }
    paths.update({key + TEMP_SUFFIX: paths[key] + TEMP_SUFFIX for key in STAGED_FILES})
    return paths


def vm_definition(
    name,
    lab_dir,
    root,
    kernel=None,
    initrd=None,
    esp=None,
    boot_mode="direct",
    accel="auto",
    memory=512,
    smp=2,
    nics=None,
    mac=None,
    append="",
    ovmf_code=None,
    ovmf_vars=None,
    machine=None,
    arch="amd64",
    data_disk="",
):
    """Validated, complete description of one VM (the SSH port is added at start).

    arch is the guest's (the image's) architecture; data_disk a size such as 1G for an
    empty second disk (kept until the VM is removed), empty for none.
    """
    check_vm_name(name)
    if arch not in ARCHES:
        raise LabError("arch must be one of {}".format(", ".join(ARCHES)))
    if arch != "amd64" and boot_mode != "direct":
        raise LabError(f"{arch} lab VMs boot directly (-kernel/-initrd); boot_mode {boot_mode} is for amd64")
    if data_disk and not SIZE_RE.fullmatch(str(data_disk)):
        raise LabError(f"data_disk must be a size such as 512M or 2G, got {data_disk!r}")
    if boot_mode not in BOOT_MODES:
        raise LabError("boot_mode must be one of {}".format(", ".join(BOOT_MODES)))
    if accel not in ACCELS:
        raise LabError("accel must be one of {}".format(", ".join(ACCELS)))
    if boot_mode == "direct" and not (kernel and initrd):
        raise LabError("boot_mode direct needs kernel and initrd")
    if boot_mode == "uefi" and not esp:
        raise LabError("boot_mode uefi needs the image's ESP (esp.img)")
    if boot_mode in ("uefi", "disk"):
        ovmf_code, ovmf_vars = find_ovmf(ovmf_code, ovmf_vars)
    if not 64 <= int(memory) <= 65536:
        raise LabError("memory is in MiB, between 64 and 65536")
    return {
        # Bump LAB_FORMAT when qemu_argv changes, so running VMs are restarted with it.
        "format": LAB_FORMAT,
        "name": name,
        "lab_dir": os.path.expanduser(lab_dir),
        "root": root,
        "kernel": kernel if boot_mode == "direct" else None,
        "initrd": initrd if boot_mode == "direct" else None,
        "esp": esp if boot_mode == "uefi" else None,
        "boot_mode": boot_mode,
        "accel": accel,
        "memory": int(memory),
        "smp": int(smp),
        "mgmt_mac": mac_for(name, "eth0"),
        "nics": normalize_nics(name, nics, mac),
        "append": append or "",
        "ovmf_code": ovmf_code if boot_mode != "direct" else None,
        "ovmf_vars": ovmf_vars if boot_mode != "direct" else None,
        "machine": machine or ARCHES[arch]["machine"],
        "arch": arch,
        "data_disk": str(data_disk or ""),
    } | ({"watchdog": WATCHDOG_DEVICE} if boot_mode == "disk" else {})


def definition_hash(vm):
    canon = json.dumps(vm, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def kernel_cmdline(vm):
    # systemd.hostname gives each VM its name although they share one image.
    base = BASE_CMDLINE.replace("console=ttyS0", "console=" + ARCHES[vm.get("arch", "amd64")]["console"])
    parts = [base, "systemd.hostname={}".format(vm["name"]), vm.get("append") or ""]
    return " ".join(p for p in parts if p).strip()


def accel_args(accel):
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    if accel == "tcg":
        # tb-size caps the translation cache (default 1 GiB): RSS per VM stays near its RAM.
        return ["-accel", "tcg,thread=multi,tb-size=256"]
    raise LabError("accel must be resolved to kvm or tcg before building the command line")


def qemu_argv(vm, ssh_port, accel):
    """The full QEMU command line of a VM (daemonized, everything in its lab dir)."""
    p = vm_paths(vm["lab_dir"], vm["name"])
    arch = ARCHES[vm.get("arch", "amd64")]
    argv = [
        arch["qemu"],
        "-name",
        "{},process=n3x-{}".format(vm["name"], vm["name"]),
        "-machine",
        vm["machine"],
    ]
    argv += accel_args(accel)
    if accel == "tcg" and arch["tcg_cpu"]:
        argv += ["-cpu", arch["tcg_cpu"]]
    argv += [
        "-m",
        str(vm["memory"]),
        "-smp",
        str(vm["smp"]),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-daemonize",
        "-pidfile",
        p["pid"],
        "-qmp",
        "unix:{},server=on,wait=off".format(qemu_value(p["qmp"])),
        "-serial",
        "file:{}".format(p["serial"]),
        # cache=unsafe: lab disks are throwaway overlays; skipping flushes saves boot time.
        "-drive",
        "if=none,id=root,format=qcow2,cache=unsafe,discard=unmap,file={}".format(qemu_value(p["overlay"])),
        "-device",
        "virtio-blk-pci,drive=root,addr=0x{:x}{}".format(DISK_SLOT, {"uefi": ",bootindex=1", "disk": ",bootindex=0"}.get(vm["boot_mode"], "")),
        "-device",
        "virtio-rng-pci",
    ]
    if vm.get("data_disk"):
        argv += [
            "-drive",
            "if=none,id=data,format=qcow2,cache=unsafe,discard=unmap,file={}".format(qemu_value(p["data"])),
            "-device",
            f"virtio-blk-pci,drive=data,addr=0x{DATA_SLOT:x},serial={DATA_DISK_SERIAL}",
        ]
    if vm["boot_mode"] == "direct":
        argv += ["-kernel", vm["kernel"], "-initrd", vm["initrd"], "-append", kernel_cmdline(vm)]
    else:
        argv += [
            "-drive",
            "if=pflash,format=raw,unit=0,readonly=on,file={}".format(qemu_value(vm["ovmf_code"])),
            "-drive",
            "if=pflash,format=raw,unit=1,file={}".format(qemu_value(p["vars"])),
        ]
    if vm.get("watchdog"):
        argv += ["-device", "{},addr=0x{:x}".format(vm["watchdog"], WATCHDOG_SLOT), "-action", "watchdog=reset"]
    if vm["boot_mode"] == "uefi":
        argv += [
            "-drive",
            "if=none,id=esp,format=raw,cache=unsafe,file={}".format(qemu_value(p["esp"])),
            "-device",
            f"virtio-blk-pci,drive=esp,addr=0x{ESP_SLOT:x},bootindex=0",
        ]
    # eth0: management, user-mode networking with SSH forwarded on loopback only.
    argv += [
        "-netdev",
        f"user,id=net-eth0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device",
        "virtio-net-pci,netdev=net-eth0,id=eth0,mac={},addr=0x{:x}".format(vm["mgmt_mac"], NIC_SLOT_BASE),
    ]
    for index, nic in enumerate(vm["nics"], start=1):
        group, port = segment_endpoint(vm["lab_dir"], nic["segment"])
        argv += [
            "-netdev",
            f"socket,id=net-{nic['name']},mcast={group}:{port},localaddr=127.0.0.1",
            "-device",
            "virtio-net-pci,netdev=net-{},id={},mac={},addr=0x{:x}".format(nic["name"], nic["name"], nic["mac"], NIC_SLOT_BASE + index),
        ]
    return argv


# ---------------------------------------------------------------- KVM probe ---------


def host_boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return "unknown"


def probe_kvm(kernel, cache_file, timeout=10.0):
    """(usable: bool, reason) for KVM, from a real short boot; cached per host boot.

    /dev/kvm existing proves nothing (seen: ioctls answer, guests never run), so the
    image's kernel is booted under KVM and must print its banner within timeout.
    """
    boot_id = host_boot_id()
    try:
        with open(cache_file) as fh:
            cached = json.load(fh)
        if cached.get("boot_id") == boot_id:
            return cached["usable"], cached["reason"] + " (cached for this host boot)"
    except (OSError, ValueError, KeyError):
        pass
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        usable, reason = False, "/dev/kvm missing or not accessible"
    else:
        usable, reason = _kvm_boot(kernel, timeout)
    os.makedirs(os.path.dirname(cache_file) or ".", exist_ok=True)
    # Written whole, then renamed: a lab starting at the same time reads the old or the new file.
    tmp = f"{cache_file}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump({"boot_id": boot_id, "usable": usable, "reason": reason}, fh)
    os.replace(tmp, cache_file)
    return usable, reason


def _kvm_boot(kernel, timeout):
    import tempfile

    with tempfile.TemporaryDirectory(prefix="n3x-kvm-probe-") as tmp:
        serial = os.path.join(tmp, "serial.log")
        argv = [
            QEMU,
            *accel_args("kvm"),
            "-m",
            "256",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            f"file:{serial}",
            "-kernel",
            kernel,
            "-append",
            "console=ttyS0 panic=-1",
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                if proc.poll() is not None:
                    break
                try:
                    with open(serial, "rb") as fh:
                        if b"Linux version" in fh.read():
                            return True, "KVM guest printed its kernel banner"
                except OSError:
                    pass
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
            err = proc.communicate()[1].decode(errors="replace").strip()
        try:
            with open(serial, "rb") as fh:
                if b"Linux version" in fh.read():
                    return True, "KVM guest printed its kernel banner"
        except OSError:
            pass
        if proc.returncode not in (None, 0, -9) and err:
            return False, f"KVM boot failed: {err.splitlines()[-1]}"
        return False, f"KVM guest printed nothing within {timeout:.0f} s"


def resolve_accel(requested, kernel, cache_file, timeout=10.0, arch="amd64"):
    """(accel, reason): kvm or tcg for the requested auto|kvm|tcg."""
    if requested == "tcg":
        return "tcg", "requested"
    if arch != HOST_ARCH:
        if requested == "kvm":
            raise LabError(f"accel kvm requested, but an {arch} guest cannot use KVM on this {HOST_ARCH} host")
        return "tcg", f"an {arch} guest on an {HOST_ARCH} host runs under TCG"
    require_tools([QEMU])  # the probe boots QEMU itself
    usable, reason = probe_kvm(kernel, cache_file, timeout) if kernel else (False, "no kernel to probe with")
    if usable:
        return "kvm", reason
    if requested == "kvm":
        raise LabError(f"accel kvm requested but KVM is not usable: {reason}")
    return "tcg", reason


# ---------------------------------------------------------------- lifecycle ---------


def read_state(paths):
    try:
        with open(paths["state"]) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def write_state(paths, state):
    tmp = paths["state" + TEMP_SUFFIX]
    with open(tmp, "w") as fh:
        json.dump(state, fh, indent=1, sort_keys=True)
    os.replace(tmp, paths["state"])


def _proc_stat(pid):
    """The fields of /proc/PID/stat after the command name (state first), or []."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_start(pid):
    """When the process started (clock ticks after boot, /proc/PID/stat field 22), or None.

    With the PID it names one process for good: a PID is reused, a (PID, start) pair is not.
    """
    fields = _proc_stat(pid)
    return int(fields[19]) if len(fields) > 19 else None


def _owns_pidfile(pid, pidfile):
    """Whether the process runs with `-pidfile PIDFILE` on its command line (our QEMU)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    return any(a == b"-pidfile" and b == pidfile.encode() for a, b in itertools.pairwise(argv))


def running_pid(paths):
    """PID of this VM's live QEMU, or None.

    The PID comes from the pidfile, or from the state file when the pidfile is gone. It is
    the VM's only when the state recorded that PID with the same start time, or (before
    the state is written) when the process has this pidfile on its command line: a PID
    recycled by another process is never taken for the VM, so never stopped.
    """
    state = read_state(paths)
    pid = _pidfile_pid(paths) or state.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not _alive(pid):
        return None
    if state.get("pid") == pid and state.get("pid_start") is not None:
        return pid if process_start(pid) == state["pid_start"] else None
    return pid if _owns_pidfile(pid, paths["pid"]) else None


def _pidfile_pid(paths):
    try:
        with open(paths["pid"]) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def ended_uncleanly(paths, state):
    """Whether the VM's last QEMU ended without flushing its disks: killed or crashed.

    QEMU removes its pidfile when it exits (guest power-off, SIGTERM), so a pidfile that
    outlives the process means it died at once; stop() notes when it had to SIGKILL.
    """
    if state.get("killed"):
        return True
    return os.path.exists(paths["pid"]) and running_pid(paths) is None


def _alive(pid):
    """Whether the process runs. A zombie has ended: a daemonized QEMU's parent is init,
    which may take a second or more to reap it (measured 1.6 s in a sandbox's init)."""
    fields = _proc_stat(pid)
    return bool(fields) and fields[0] != "Z"


def _wait_gone(pid, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def stop(paths):
    """Stop the VM's QEMU if it runs. Returns True when a process was stopped.

    SIGTERM lets QEMU write its qcow2 metadata out; one that must be killed leaves disks
    that the next start() replaces (see ended_uncleanly).
    """
    pid = running_pid(paths)
    if pid is None:
        if ended_uncleanly(paths, read_state(paths)):
            return False  # start() sees the stale pidfile and replaces the disks
        _remove(paths, ("pid", "qmp"))
        return False
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, 10):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5)
        state = read_state(paths)
        if state:
            write_state(paths, {**state, "killed": True})
    _remove(paths, ("pid", "qmp"))
    return True


def _remove(paths, keys):
    for key in keys:
        with contextlib.suppress(OSError):
            os.unlink(paths[key])


# A VM's files that outlive its QEMU process (pid and qmp go with it).
VM_FILES = ("overlay", "data", "esp", "vars", "serial", "state")
# What an interrupted start can leave: a staged file, the boot entry on its way to the ESP.
LEFTOVER_FILES = (*(key + TEMP_SUFFIX for key in STAGED_FILES), "entry")


def has_files(paths):
    """Whether any file of the VM is left (it exists, running or not)."""
    return any(os.path.exists(paths[k]) for k in (*VM_FILES, "pid", *LEFTOVER_FILES))


def remove(paths):
    """Stop the VM and delete all of its files. Returns True when anything existed."""
    stopped = stop(paths)
    existed = has_files(paths)
    _remove(paths, (*VM_FILES, "pid", "qmp", *LEFTOVER_FILES))
    return stopped or existed


def _create(path, make):
    """make(temporary path), then rename it to path: never a half-made disk under its name."""
    temporary = path + TEMP_SUFFIX  # the STAGED_FILES name that remove() knows
    with contextlib.suppress(OSError):
        os.unlink(temporary)
    try:
        make(temporary)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _qemu_img_overlay(base, overlay):
    _create(
        overlay,
        lambda path: subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", os.path.abspath(base), path],
            check=True,
            capture_output=True,
        ),
    )


def _copy(source, dest, mode=None):
    def make(path):
        shutil.copyfile(source, path)
        if mode is not None:
            os.chmod(path, mode)

    _create(dest, make)


def _prepare_disks(vm, paths, state):
    """Create missing disks; recreate them when the base image changed or the last QEMU
    was killed (its qcow2 metadata may be half written). Returns why disks were replaced."""
    replaced = ""
    if ended_uncleanly(paths, state):
        replaced = "the last QEMU of {} was killed: its disks were replaced".format(vm["name"])
        _remove(paths, ("overlay", "data", "esp", "vars", "pid"))
    elif not (state.get("root") == vm["root"] and state.get("esp") == vm["esp"]):
        _remove(paths, ("overlay", "esp", "vars"))
    if not os.path.exists(paths["overlay"]):
        _qemu_img_overlay(vm["root"], paths["overlay"])
    if vm.get("data_disk") and not os.path.exists(paths["data"]):
        # Empty, like a new board's data partition; it survives restarts, not removal.
        _create(paths["data"], lambda path: subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, vm["data_disk"]], check=True, capture_output=True))
    if vm["boot_mode"] == "uefi":
        if not os.path.exists(paths["esp"]):
            # A copy per VM (small): systemd-boot writes its random seed there, and the
            # boot entry carries this VM's kernel command line (hostname, extra args).
            _copy(vm["esp"], paths["esp"])
        write_boot_entry(vm, paths)
    if vm["boot_mode"] in ("uefi", "disk") and not os.path.exists(paths["vars"]):
        _copy(vm["ovmf_vars"], paths["vars"], 0o600)
    return replaced


def write_boot_entry(vm, paths):
    """(Re)write the systemd-boot entry on the VM's ESP copy with its kernel command line."""
    require_tools(["mcopy"])
    entry = paths["entry"]
    with open(entry, "w") as fh:
        fh.write(f"title n3x lab {vm['name']}\nlinux /vmlinuz\ninitrd /initrd.img\noptions {kernel_cmdline(vm)}\n")
    try:
        subprocess.run(["mcopy", "-o", "-i", paths["esp"], entry, "::/loader/entries/n3x.conf"], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        raise LabError(f"cannot write the boot entry on {paths['esp']}: {exc.stderr.decode(errors='replace').strip()}") from exc
    finally:
        os.unlink(entry)


def serial_tail(paths, lines=15):
    try:
        with open(paths["serial"], "rb") as fh:
            return fh.read()[-4000:].decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


PORT_LOCK = "~/.cache/n3x/lab-ports.lock"


@contextlib.contextmanager
def port_lock(path=PORT_LOCK):
    """Hold the host's lab port lock: choosing a forwarded port and QEMU binding it (it
    returns from -daemonize once its sockets are bound) happen while no other lab does."""
    path = os.path.expanduser(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def start(vm, accel, ssh_port=None, attempts=3):
    """Start the VM (must not be running). Returns the new state dict."""
    require_tools([ARCHES[vm.get("arch", "amd64")]["qemu"], "qemu-img"])
    for key in ("root", "kernel", "initrd", "esp"):
        if vm.get(key) and not os.path.isfile(vm[key]):
            raise LabError("{} of {} not found: {} (build the image with the lab_image role)".format(key, vm["name"], vm[key]))
    paths = vm_paths(vm["lab_dir"], vm["name"])
    os.makedirs(paths["dir"], exist_ok=True)
    state = read_state(paths)
    replaced = _prepare_disks(vm, paths, state)
    port = ssh_port or state.get("ssh_port")
    last_err = ""
    for _attempt in range(attempts):
        _remove(paths, ("pid", "qmp", "serial"))
        started = time.time()
        # A port is free from the check until QEMU binds it only if no other lab (another
        # process) checks the same port in between: both would pick it, one QEMU would fail.
        with port_lock():
            if not port or not port_free(port):
                port = free_port()
            argv = qemu_argv(vm, port, accel)
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode == 0:
            # The pidfile, not the state: the state still describes the previous QEMU.
            pid = _pidfile_pid(paths)
            if pid is None or not _alive(pid) or not _owns_pidfile(pid, paths["pid"]):
                raise LabError("QEMU of {} exited right after start; serial log: {}".format(vm["name"], serial_tail(paths)))
            new_state = {
                "name": vm["name"],
                "definition": definition_hash(vm),
                "argv": argv,
                "accel": accel,
                "ssh_port": port,
                "pid": pid,
                "pid_start": process_start(pid),
                "root": vm["root"],
                "esp": vm["esp"],
                "started_at": started,
            }
            if replaced:
                new_state["replaced_disks"] = replaced
            write_state(paths, new_state)
            return new_state
        # -daemonize: a failed start leaves no child behind, but clean up if it did.
        stop(paths)
        last_err = (proc.stderr or proc.stdout).strip()
        if "hostfwd" in last_err or "Could not set up host forwarding" in last_err:
            port = None  # someone took the port between the check and QEMU's bind
            continue
        break
    raise LabError("QEMU failed to start {}: {}".format(vm["name"], last_err))


def status(vm):
    """(running pid or None, same definition as vm: bool, state)."""
    paths = vm_paths(vm["lab_dir"], vm["name"])
    state = read_state(paths)
    pid = running_pid(paths)
    return pid, state.get("definition") == definition_hash(vm), state


def wait_ssh(port, timeout=120.0, host="127.0.0.1"):
    """Seconds until an SSH banner is read on host:port; raises LabError on timeout.

    A TCP connect alone proves nothing: QEMU's user-mode forwarder accepts connections
    before the guest listens, then closes them.
    """
    start_t = time.time()
    deadline = start_t + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as sock:
                sock.settimeout(3)
                if sock.recv(64).startswith(b"SSH-"):
                    return time.time() - start_t
        except OSError:
            pass
        time.sleep(0.3)
    raise LabError(f"no SSH banner on {host}:{port} within {timeout:.0f} s")


# ---------------------------------------------------------------- QMP ---------------


def qmp_command(qmp_path, command, arguments=None, timeout=5.0):
    """Run one QMP command over the VM's unix socket (plain JSON, no extra library)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(qmp_path)
        reader = sock.makefile("rb")

        def recv():
            while True:
                line = reader.readline()
                if not line:
                    raise LabError("QMP connection closed by QEMU")
                msg = json.loads(line)
                if "event" not in msg:
                    return msg

        recv()  # greeting
        sock.sendall(json.dumps({"execute": "qmp_capabilities"}).encode() + b"\n")
        recv()
        req = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        sock.sendall(json.dumps(req).encode() + b"\n")
        reply = recv()
        if "error" in reply:
            raise LabError("QMP {} failed: {}".format(command, reply["error"].get("desc", reply["error"])))
        return reply.get("return")
    except OSError as exc:
        raise LabError(f"QMP socket {qmp_path}: {exc}") from exc
    finally:
        sock.close()


def vm_nics(state):
    """NIC names (eth0, eth1...) of a started VM, from its recorded command line."""
    return [m.group(1) for arg in state.get("argv", []) for m in [re.match(r"virtio-net-pci,netdev=[^,]+,id=([^,]+),", str(arg))] if m]


def link_state(paths, nic):
    """Recorded link state of a NIC (QEMU cannot report it: `info network` does not
    show set_link's effect). A fresh start has every link up."""
    state = read_state(paths)
    if nic not in vm_nics(state):
        raise LabError("VM {} has no NIC {} (it has {})".format(state.get("name", "?"), nic, ", ".join(vm_nics(state))))
    return state.get("links", {}).get(nic, True)


def set_link(paths, nic, up):
    """Take a NIC's link (carrier) up or down: a cable pull. Returns True if changed."""
    if link_state(paths, nic) == bool(up):
        return False
    qmp_command(paths["qmp"], "set_link", {"name": nic, "up": bool(up)})
    state = read_state(paths)
    state.setdefault("links", {})[nic] = bool(up)
    write_state(paths, state)
    return True
