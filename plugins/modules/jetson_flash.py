#!/usr/bin/python
# Copyright: n3x developers
# MIT License
"""Flash an NVIDIA Jetson board in recovery mode with an L4T BSP, after preflight checks."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: jetson_flash
short_description: Flash NVIDIA Jetson boards in recovery mode from an L4T R36 BSP, as NVIDIA's Quick Start does
version_added: 0.2.0
description:
  - Runs on the machine the boards are plugged into by USB, as root.
  - "Preflight, before anything is written, every refusal reported at once: root; an x86-64
    host with the tools NVIDIA's scripts call (C(tools/l4t_flash_prerequisites.sh) installs
    them); a C(Linux_for_Tegra) tree whose C(nv_tegra/nv_tegra_release) is an R36 release
    matching O(expected_release) and equal to C(rootfs/etc/nv_tegra_release) (so
    C(apply_binaries.sh) ran); the module family from the common file O(board_config)'s
    C(.conf) sources (C(p3767.conf.common): Orin NX/Nano, C(p3701.conf.common): AGX Orin);
    a flash table row for (family, O(storage)); every script and XML the command names; free disk.
    A host distribution NVIDIA does not support for the release is a warning."
  - "The table (Jetson Linux r36.4 Quick Start): Orin NX/Nano to C(nvme), C(usb) or C(sd) with
    C(tools/kernel_flash/l4t_initrd_flash.sh --external-device nvme0n1p1|sda1|mmcblk0p1
    -c tools/kernel_flash/flash_l4t_t234_nvme.xml -p '-c bootloader/generic/cfg/flash_t234_qspi.xml'
    --showlogs --network usb0 BOARD internal) (C(emmc) refused: no eMMC; C(sd) only for the
    devkit module with the microSD slot, recovery id 7523); AGX Orin to C(emmc) with
    C(flash.sh BOARD internal) and to C(nvme), C(usb), C(sd) with the same initrd command without
    C(-p) and with C(external)."
  - Finds the board in recovery mode at O(usb_path) and refuses the wrong module, another board
    in recovery mode when the BSP's script would not skip it, or several boards without O(usb_path);
    checks again right before the flash.
  - "Customises the image from a clean rootfs for every board: restores every path
    C(tools/l4t_create_default_user.sh) and n3x change to the state recorded before the first
    customisation, runs that script (C(-u USER -n HOST --accept-license), no password on any
    command line), locks the password, installs only O(ssh_public_keys), a NOPASSWD sudoers
    drop-in, an sshd drop-in with C(PasswordAuthentication no) and a new ed25519 host key of
    the board's own, returned as RV(host_key) for the controller's known_hosts. Once the image
    is customised, every way out (the flash, a failed step, a refusal) puts the rootfs back in
    its clean state before the result is reported, so the board's private host key does not
    stay in C(rootfs/) (the image files NVIDIA's script built still hold it: keep the BSP
    directory readable by root only)."
  - "With O(data_partition), flashes a layout derived from the BSP's
    C(flash_l4t_t234_nvme.xml): APP fixed at O(app_size) (C(-S)) and a C(longhorn) partition
    taking the rest of the disk."
  - "Runs the flash in its own process group with all output in a log file; on O(timeout) the
    group gets SIGTERM (the script's EXIT trap cleans the host) and after O(kill_grace) seconds
    SIGKILL."
  - Reports a board flashed only when the script exited 0 and printed its success line
    (C(Flash is successful) from the initrd, C(*** The target ... has been flashed successfully. ***)
    from C(flash.sh)); with O(massflash), only when the run exited 0 and that board's own log
    under C(initrdlog/) holds the success line.
  - "O(massflash): NVIDIA's mass-flash flow for identical boards: one image (host name
    O(hostname), one host key for the batch), C(--no-flash --massflash N) built offline from
    O(board_identity), then, once exactly the boards of O(batch) are in recovery mode,
    C(--flash-only --massflash N)."
  - In check mode runs the preflight and the board detection and returns the command.
options:
  bsp_dir:
    description: The C(Linux_for_Tegra) directory, with the sample rootfs extracted into C(rootfs/) and C(apply_binaries.sh) run.
    type: path
    required: true
  board_config:
    description: The board config (a C(BOARD.conf) in O(bsp_dir)), for example C(jetson-orin-nano-devkit).
    type: str
    required: true
  storage:
    description: Where the root file system goes.
    type: str
    choices: [nvme, usb, sd, emmc]
    default: nvme
  expected_release:
    description: The L4T release the BSP must be, C(R36.4) (any R36.4.x) or exact such as C(R36.4.3).
    type: str
    default: R36.4
  min_free_gib:
    description: Free GiB the BSP's file system needs for the images the scripts build.
    type: int
    default: 40
  usb_path:
    description: The sysfs USB path of the board (C(1-2), C(3-1.4)), passed as C(--usb-instance).
    type: str
  default_user:
    description: The user created in the image (its password is locked; it logs in with the keys).
    type: str
    default: n3x
  ssh_public_keys:
    description: SSH public keys (lines of C(authorized_keys)) for O(default_user); the only way in.
    type: list
    elements: str
    required: true
  hostname:
    description: The board's host name in the image (with O(massflash), the batch's common one).
    type: str
    required: true
  data_partition:
    description: Flash the layout with a C(longhorn) data partition after a fixed-size APP.
    type: bool
    default: false
  app_size:
    description: The APP (rootfs) partition size with O(data_partition), as C(-S) takes it (C(64GiB)).
    type: str
  massflash:
    description: Flash every board of O(batch) at once with NVIDIA's mass-flash flow.
    type: bool
    default: false
  batch:
    description: With O(massflash), the inventory names and USB paths of the boards, C([{name, usb_path}]).
    type: list
    elements: dict
    default: []
  board_identity:
    description:
      - "With O(massflash), the boards' C(BOARDID), C(BOARDSKU), C(FAB) and C(BOARDREV), from the table
        at the end of C(tools/kernel_flash/README_initrd_flash.txt) (C(CHIP_SKU), C(RAMCODE_ID) and
        C(RAMCODE), which the script passes on to C(flash.sh), may be given too) (an Orin Nano devkit:
        C({BOARDID: '3767', BOARDSKU: '0005', FAB: '300'})). The batch's images are built offline
        with them (README Workflows 2 and 7): built online, the build reads the EEPROM of a board,
        which must then be the only one in recovery mode and be put in recovery mode again."
      - C(BOARDID) must be the board config's module; for Orin NX/Nano the boards' recovery ids must
        be the SKU's (C(0000) 7323, C(0001) 7423, C(0003) and C(0005) 7523, C(0004) 7623).
    type: dict
    default: {}
  log_dir:
    description: Where the flash log is written.
    type: path
    default: /var/log/n3x
  timeout:
    description: Seconds the flash may run before its process group is stopped (the board is then reported not flashed).
    type: int
    default: 3600
  kill_grace:
    description: Seconds between SIGTERM and SIGKILL when the flash times out.
    type: int
    default: 30
  sysfs_root:
    description: Where the USB devices are listed in sysfs.
    type: path
    default: /sys/bus/usb/devices
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - n3x.cluster.attributes
notes:
  - Takes 10 to 30 minutes per board. C(playbooks/jetson-flash.yml) flashes one board at a time;
    C(playbooks/jetson-massflash.yml) a batch of identical boards.
seealso:
  - module: n3x.cluster.jetson_recovery
author:
  - n3x developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Flash an Orin Nano devkit to its NVMe drive
  n3x.cluster.jetson_flash:
    bsp_dir: /srv/l4t/R36.4.3/Linux_for_Tegra
    board_config: jetson-orin-nano-devkit
    storage: nvme
    expected_release: R36.4.3
    usb_path: 1-2
    default_user: n3x
    ssh_public_keys: ["{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"]
    hostname: jetson-1
  become: true
  register: flashed
"""

RETURN = r"""
flashed:
  description: True only when the flash script exited 0 and printed its success line (every board of the batch, with O(massflash)).
  returned: always
  type: bool
command:
  description: The flash command, run in O(bsp_dir) (in check mode, the command that would run).
  returned: when the preflight passed
  type: str
  sample: ./flash.sh jetson-agx-orin-devkit internal
argv:
  description: The flash command as a list.
  returned: when the preflight passed
  type: list
  elements: str
release:
  description: The BSP's L4T release.
  returned: when the preflight passed
  type: str
  sample: R36.4.3
family:
  description: The module family of the board config, C(p3767) or C(p3701).
  returned: when the preflight passed
  type: str
host_key:
  description: The board's new SSH host public key (C(ssh-ed25519 AAAA...)), for known_hosts.
  returned: when the image was customised
  type: str
rc:
  description: The flash script's exit code.
  returned: when the flash ran
  type: int
log_path:
  description: The file holding the flash script's output.
  returned: when the flash ran
  type: str
board:
  description: The board in recovery mode (see M(n3x.cluster.jetson_recovery)).
  returned: when a board was found, without O(massflash)
  type: dict
boards:
  description: With O(massflash), per inventory name C(flashed), C(msg), C(log_path) and C(usb_path).
  returned: with O(massflash), when the flash ran
  type: dict
problems:
  description: Every preflight refusal.
  returned: when the preflight failed
  type: list
  elements: str
"""

import os
import platform
import shlex
import shutil
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson import (
    JetsonError,
    detect_boards,
    device_lister,
    flash_result,
    massflash_results,
    select_batch,
    select_board,
)
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson_bsp import (
    FLASH_SH,
    LONGHORN_LAYOUT,
    T234_NVME_LAYOUT,
    BspError,
    board_identity,
    honours_usb_instance,
    host_problems,
    host_warnings,
    longhorn_layout,
    plan,
    read_os_release,
    read_small,
)
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson_image import ImageError, customise, restore
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_process import interrupts_raise, run_in_process_group

ARGUMENT_SPEC = {
    "bsp_dir": {"type": "path", "required": True},
    "board_config": {"type": "str", "required": True},
    "storage": {"type": "str", "choices": ["nvme", "usb", "sd", "emmc"], "default": "nvme"},
    "expected_release": {"type": "str", "default": "R36.4"},
    "min_free_gib": {"type": "int", "default": 40},
    "usb_path": {"type": "str"},
    "default_user": {"type": "str", "default": "n3x"},
    "ssh_public_keys": {"type": "list", "elements": "str", "required": True, "no_log": False},
    "hostname": {"type": "str", "required": True},
    "data_partition": {"type": "bool", "default": False},
    "app_size": {"type": "str"},
    "massflash": {"type": "bool", "default": False},
    "batch": {"type": "list", "elements": "dict", "default": []},
    "board_identity": {"type": "dict", "default": {}},
    "log_dir": {"type": "path", "default": "/var/log/n3x"},
    "timeout": {"type": "int", "default": 3600},
    "kill_grace": {"type": "int", "default": 30},
    "sysfs_root": {"type": "path", "default": "/sys/bus/usb/devices"},
}
GIB = 1024**3
NO_FLASH_DONE = "Put device in recovery mode, run with option --flash-only to flash device."


def plan_for(p):
    """The BSP plan for the module's parameters (BspError on a refusal)."""
    massflash = p["massflash"]
    return plan(
        p["bsp_dir"],
        p["board_config"],
        p["storage"],
        p["expected_release"],
        p["data_partition"],
        p["app_size"],
        None if massflash else (p["usb_path"] or None),
        len(p["batch"]) if massflash else None,
        "no-flash" if massflash else None,
    )


def preflight(module, p):
    """(plan, problems, warnings) before any board or file is touched."""
    problems, warnings = [], []
    if os.geteuid() != 0:
        problems.append(f"not root (uid {os.geteuid()}): NVIDIA's flash scripts need root; run with become: true")
    batch = p["batch"] if p["massflash"] else []
    try:
        found = plan_for(p)
    except BspError as exc:
        return None, [*problems, str(exc)], warnings
    problems += found.problems
    problems += host_problems(found.method, platform.machine(), module.get_bin_path)
    warnings += host_warnings(found.release, read_os_release())
    if p["massflash"] and (not batch or found.method.tool == FLASH_SH):
        problems.append("massflash needs a batch of boards and an l4t_initrd_flash.sh row of the table")
    if p["massflash"]:
        try:
            board_identity(p["board_identity"], found.family)
        except BspError as exc:
            problems.append(
                f"{exc}: massflash builds the batch's images offline (README_initrd_flash.txt, Workflows 2 and 7), which needs "
                "the boards' identity (jetson_flash_board_identity); online, the build reads one board, which must be the only one "
                "in recovery mode and be put in recovery mode again afterwards"
            )
    try:
        free = shutil.disk_usage(p["bsp_dir"]).free
    except OSError as exc:
        problems.append(f"{p['bsp_dir']}: cannot read free space: {exc}")
    else:
        if free < p["min_free_gib"] * GIB:
            problems.append(f"{p['bsp_dir']}: {free / GIB:.1f} GiB free, flashing needs at least {p['min_free_gib']} GiB (system images are built there)")
    return found, problems, warnings


def write_layout(bsp_dir):
    """The Longhorn layout, derived from this BSP's own flash_l4t_t234_nvme.xml, into the BSP."""
    source = os.path.join(bsp_dir, T234_NVME_LAYOUT)
    text = longhorn_layout(read_small(source), source)
    target = os.path.join(bsp_dir, LONGHORN_LAYOUT)
    if os.path.lexists(target) and (os.path.islink(target) or not read_small(target).startswith("<!-- Generated by n3x.cluster")):
        raise BspError(f"{target} exists and n3x did not write it; refusing to replace it")
    tmp = target + ".n3x-tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)  # never write through whatever was left there
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, target)
    return target


def run_logged(module, argv, p, name, env=None):
    os.makedirs(p["log_dir"], mode=0o750, exist_ok=True)
    log_path = os.path.join(p["log_dir"], f"n3x-flash-{name}-{time.strftime('%Y%m%d-%H%M%S')}.log")
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"# cwd: {p['bsp_dir']}\n# command: {shlex.join(argv)}\n")
        log.flush()
        rc, timed_out = run_in_process_group(argv, p["bsp_dir"], log, p["timeout"], p["kill_grace"], env=env)
        if timed_out:
            log.write(f"\n# n3x: stopped after {p['timeout']} s (SIGTERM to the process group, SIGKILL after {p['kill_grace']} s)\n")
    with open(log_path, encoding="utf-8", errors="replace") as log:
        return rc, timed_out, log.read(), log_path


class Stop(Exception):
    """Ends the run: a refusal or a failed step, with the result fields to report."""

    def __init__(self, msg, **fields):
        super().__init__(msg)
        self.fields = fields


def put_back(module, bsp_dir):
    """The rootfs back in its clean state: the board's private host key and user do not stay in
    the BSP on the flashing machine (the image files NVIDIA's script built from it do)."""
    try:
        restore(bsp_dir)
    except (ImageError, OSError) as exc:
        module.warn(f"could not put {bsp_dir}/rootfs back in its clean state: {exc}")


def run(module, p, found):
    """(failed, result) of everything after the preflight. Once the rootfs was touched it is put
    back in its clean state on every way out (a refusal, a failed image build or layout, a board
    gone before the flash, the flash itself), before anything is reported."""
    result = {"changed": False, "flashed": False, "release": found.release, "family": found.family.name}
    try:
        flash(module, p, found, result)
    except Stop as stop:
        result.update(stop.fields, msg=str(stop))
        return True, result
    finally:
        if result.get("changed"):
            put_back(module, p["bsp_dir"])
    return not (result["flashed"] or module.check_mode), result


def flash(module, p, found, result):
    """Find the board(s), customise the image, flash; fills ``result``, raises Stop on a refusal."""
    list_devices = device_lister(module, p["sysfs_root"])
    host = os.uname().nodename
    sole = found.method.tool == FLASH_SH or not honours_usb_instance(p["bsp_dir"])
    paths = [str(b.get("usb_path") or "") for b in p["batch"]]

    def check_boards(when=""):
        boards, others = detect_boards(list_devices()[0])
        try:
            if p["massflash"]:
                return select_batch(boards, found.family, paths, len(paths), host, (p["board_identity"] or {}).get("BOARDSKU"))
            return select_board(boards, found.family, p["usb_path"], others, host, p["storage"], sole)
        except JetsonError as exc:
            raise Stop(f"{exc}{when}", boards=boards) from None

    selected = check_boards()
    if not p["massflash"]:
        result["board"] = selected
    argv = found.argv
    result.update(argv=argv, command=shlex.join(argv))
    if module.check_mode:
        result.update(changed=True, msg=f"check mode: would run {result['command']} in {p['bsp_dir']}; nothing was flashed")
        return

    def run_command(argv, cwd=None):
        return module.run_command(argv, cwd=cwd)

    result["changed"] = True  # from here on the BSP's rootfs holds this board's image, or part of it
    try:
        result["host_key"] = customise(p["bsp_dir"], p["default_user"], p["hostname"], p["ssh_public_keys"], run_command)
        if p["data_partition"]:
            result["layout"] = write_layout(p["bsp_dir"])
    except (ImageError, BspError, OSError) as exc:
        raise Stop(f"{exc}; nothing was flashed") from None
    if p["massflash"]:
        massflash(module, p, found, result, check_boards, paths)
        return
    check_boards(" (checked again right before flashing); nothing was flashed")  # never the wrong board
    rc, timed_out, output, log_path = run_logged(module, argv, p, p["hostname"])
    verdict = flash_result(rc, output, argv, timed_out)
    result.update(rc=rc, log_path=log_path, flashed=verdict["flashed"], msg=f"{verdict['msg']} (log: {log_path})")


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    found, problems, warnings = preflight(module, p)
    for warning in warnings:
        module.warn(warning)
    if problems:
        module.fail_json(msg="refusing to flash:\n" + "\n".join(problems), problems=problems, changed=False, flashed=False)
    # Ctrl-C or ansible-playbook's SIGTERM: the flash group gets SIGTERM (NVIDIA's EXIT trap
    # runs) and the rootfs is put back before the module ends.
    with interrupts_raise():
        failed, result = run(module, p, found)
    if failed:
        module.fail_json(**result)
    module.exit_json(**result)


def massflash(module, p, found, result, check_boards, paths):
    """--no-flash --massflash N builds the images; --flash-only --massflash N flashes the batch."""
    names = [str(b.get("name") or "") for b in p["batch"]]
    try:
        offline = board_identity(p["board_identity"], found.family)
    except BspError as exc:
        raise Stop(f"{exc}; no board was flashed") from None
    rc, timed_out, output, log_path = run_logged(module, found.argv, p, f"{p['hostname']}-images", {**os.environ, **offline})
    if rc != 0 or timed_out or not any(line.strip() == NO_FLASH_DONE for line in output.splitlines()):
        raise Stop(f"building the massflash images failed (exit {rc}); no board was flashed (log: {log_path})", rc=rc, log_path=log_path)
    flash_argv = ["--flash-only" if arg == "--no-flash" else arg for arg in found.argv]
    check_boards(" (checked again right before flashing); no board was flashed")
    rc, timed_out, output, log_path = run_logged(module, flash_argv, p, p["hostname"])
    per_path = massflash_results(-1 if timed_out else rc, output, p["bsp_dir"], paths)
    boards = {name: {**per_path[path], "usb_path": path} for name, path in zip(names, paths, strict=True)}
    flashed = all(b["flashed"] for b in boards.values())
    result.update(argv=flash_argv, command=shlex.join(flash_argv), rc=rc, log_path=log_path, boards=boards, flashed=flashed)
    result["msg"] = "; ".join(f"{name}: {'flashed' if b['flashed'] else 'NOT flashed'} ({b['msg']})" for name, b in boards.items())


if __name__ == "__main__":
    main()
