#!/usr/bin/python
# Copyright: n3x developers
# MIT License
"""Flash an NVIDIA Jetson board in recovery mode with an L4T BSP, after preflight checks."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: jetson_flash
short_description: Flash an NVIDIA Jetson board in recovery mode from an L4T BSP
version_added: 0.2.0
description:
  - Runs on the machine the board is plugged into by USB, as root.
  - "Preflight, before anything is written: root, the BSP directory exists and is a
    C(Linux_for_Tegra) tree, its release (C(rootfs/etc/nv_tegra_release) or
    C(nv_tegra/bsp_version)) matches O(expected_release), the board config exists, the
    flash tools and C(tools/l4t_create_default_user.sh) are executable, and the BSP's file
    system has O(min_free_gib) free. Every failed check is reported, one per line."
  - Then finds the board in recovery mode (as M(n3x.cluster.jetson_recovery) does) and
    refuses when there is none, the wrong module, or several without O(usb_path).
  - Pre-seeds the default user with C(tools/l4t_create_default_user.sh -u USER --accept-license)
    (no password on any command line; the script sets a random one that is never logged),
    installs O(ssh_public_keys) in the user's C(~/.ssh/authorized_keys) in C(rootfs/) and a
    C(/etc/sudoers.d) drop-in so Ansible can log in with the key and become root after first boot.
  - "Flashes with NVIDIA's script for O(storage): C(nvme) and C(usb) with
    C(tools/kernel_flash/l4t_initrd_flash.sh --external-device nvme0n1p1|sda1
    -c tools/kernel_flash/flash_l4t_t234_nvme.xml -p '-c bootloader/generic/cfg/flash_t234_qspi.xml'
    --showlogs --network usb0 BOARD internal), C(sd) with C(flash.sh BOARD mmcblk0p1) and
    C(emmc) with C(flash.sh BOARD internal), writing all output to a log file."
  - Reports C(flashed=true) only when the script exited 0 and printed its success line
    (C(Flash is successful) for C(l4t_initrd_flash.sh),
    C(*** The target ... has been flashed successfully. ***) for C(flash.sh)); anything else
    fails the task with the exit code and the end of the log.
  - In check mode runs the preflight and the board detection and returns the command without
    running it or touching the BSP.
options:
  bsp_dir:
    description: The C(Linux_for_Tegra) directory of the L4T BSP, with the sample root file system applied.
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
    description: The sysfs USB path of the board to flash (passed as C(--usb-instance)); needed when several boards are in recovery mode.
    type: str
  default_user:
    description: The user created in the image for Ansible to log in as.
    type: str
    default: n3x
  ssh_public_keys:
    description: SSH public keys (lines of C(authorized_keys)) for O(default_user).
    type: list
    elements: str
    required: true
  hostname:
    description: The board's host name in the image.
    type: str
  log_dir:
    description: Where the flash log is written (C(n3x-flash-HOSTNAME-TIME.log)).
    type: path
    default: /var/log/n3x
  timeout:
    description: Seconds the flash script may run before it is stopped (and the board reported not flashed).
    type: int
    default: 3600
  sysfs_root:
    description: Where the USB devices are listed in sysfs.
    type: path
    default: /sys/bus/usb/devices
extends_documentation_fragment:
  - n3x.cluster.attributes
notes:
  - Takes 10 to 30 minutes per board. Flash one board at a time (C(playbooks/jetson-flash.yml) does).
seealso:
  - module: n3x.cluster.jetson_recovery
author:
  - n3x developers
"""

EXAMPLES = r"""
- name: Flash an Orin Nano devkit to its NVMe drive
  n3x.cluster.jetson_flash:
    bsp_dir: /srv/l4t/R36.4.3/Linux_for_Tegra
    board_config: jetson-orin-nano-devkit
    storage: nvme
    expected_release: R36.4.3
    default_user: n3x
    ssh_public_keys: ["{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"]
    hostname: jetson-1
  become: true
  register: flashed
"""

RETURN = r"""
flashed:
  description: True only when the flash script exited 0 and printed its success line.
  returned: always
  type: bool
command:
  description: The flash command, run in O(bsp_dir) (in check mode, the command that would run).
  returned: when the preflight passed
  type: str
  sample: ./flash.sh jetson-orin-nano-devkit mmcblk0p1
argv:
  description: The flash command as a list.
  returned: when the preflight passed
  type: list
  elements: str
rc:
  description: The flash script's exit code.
  returned: when the flash ran
  type: int
log_path:
  description: The file holding the flash script's output.
  returned: when the flash ran
  type: str
board:
  description: The board in recovery mode that was flashed (see M(n3x.cluster.jetson_recovery)).
  returned: when a board was found
  type: dict
problems:
  description: Every preflight refusal.
  returned: when the preflight failed
  type: list
  elements: str
"""

import os
import shlex
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson import (
    JetsonError,
    default_user_command,
    device_lister,
    find_boards,
    flash_command,
    flash_result,
    preflight,
    redact,
    seed_access,
)

ARGUMENT_SPEC = {
    "bsp_dir": {"type": "path", "required": True},
    "board_config": {"type": "str", "required": True},
    "storage": {"type": "str", "choices": ["nvme", "usb", "sd", "emmc"], "default": "nvme"},
    "expected_release": {"type": "str", "default": "R36.4"},
    "min_free_gib": {"type": "int", "default": 40},
    "usb_path": {"type": "str"},
    "default_user": {"type": "str", "default": "n3x"},
    "ssh_public_keys": {"type": "list", "elements": "str", "required": True, "no_log": False},
    "hostname": {"type": "str"},
    "log_dir": {"type": "path", "default": "/var/log/n3x"},
    "timeout": {"type": "int", "default": 3600},
    "sysfs_root": {"type": "path", "default": "/sys/bus/usb/devices"},
}


def run_flash(argv, bsp_dir, log_path, timeout):
    """(rc, output) of the flash script, its output also in log_path."""
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"# cwd: {bsp_dir}\n# command: {shlex.join(argv)}\n")
        log.flush()
        try:
            rc = subprocess.run(argv, cwd=bsp_dir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            log.write(f"\n# n3x: stopped after {timeout} s\n")
            rc = 124
    with open(log_path, encoding="utf-8", errors="replace") as log:
        return rc, log.read()


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    result = {"changed": False, "flashed": False}

    problems = preflight(p["bsp_dir"], p["board_config"], p["storage"], p["expected_release"], p["min_free_gib"])
    if problems:
        module.fail_json(msg="refusing to flash:\n" + "\n".join(problems), problems=problems, **result)

    found = find_boards(device_lister(module, p["sysfs_root"]), p["board_config"], p["usb_path"], True, os.uname().nodename)
    if found.get("failed"):
        module.fail_json(msg=found["msg"], boards=found["boards"], **result)
    board = found["selected"]
    # --usb-instance only when the caller chose a board: with one board the scripts find it.
    argv = flash_command(p["board_config"], p["storage"], p["usb_path"] or None)
    result.update(board=board, argv=argv, command=shlex.join(argv))

    if module.check_mode:
        result.update(changed=True, msg=f"check mode: would run {result['command']} in {p['bsp_dir']}; nothing was flashed")
        module.exit_json(**result)

    try:
        user_argv = default_user_command(p["default_user"], p["hostname"])
        rc, out, err = module.run_command(user_argv, cwd=p["bsp_dir"])
        if rc != 0:
            module.fail_json(msg=f"{user_argv[0]} failed ({rc}); nothing was flashed: {redact(out + err).strip()[-2000:]}", **result)
        seed_access(p["bsp_dir"], p["default_user"], p["ssh_public_keys"])
    except (JetsonError, OSError) as exc:
        module.fail_json(msg=f"{exc}; nothing was flashed", **result)

    os.makedirs(p["log_dir"], mode=0o750, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_path = os.path.join(p["log_dir"], f"n3x-flash-{p['hostname'] or p['board_config']}-{stamp}.log")
    rc, output = run_flash(argv, p["bsp_dir"], log_path, p["timeout"])
    verdict = flash_result(rc, output, argv)
    # The board's flash storage changed whatever the outcome, once the script ran.
    result.update(changed=True, rc=rc, log_path=log_path, flashed=verdict["flashed"], msg=f"{verdict['msg']} (log: {log_path})")
    if not verdict["flashed"]:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
