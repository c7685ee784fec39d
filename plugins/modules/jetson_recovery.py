#!/usr/bin/python
# Copyright: n3x developers
# MIT License
"""Find NVIDIA Jetson boards in USB recovery mode on the machine the module runs on."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: jetson_recovery
short_description: Find NVIDIA Jetson boards in USB recovery mode
version_added: 0.2.0
description:
  - Lists the USB devices of the machine it runs on (the one the boards are plugged into),
    from C(/sys/bus/usb/devices) or, when sysfs has no USB tree, from C(lsusb), and returns
    the NVIDIA devices (vendor C(0955)) whose product id is a Jetson module in Force Recovery
    Mode (APX), with the module name, its compatible board configs and its USB path.
  - Product ids (fill_devpaths() in the BSP's C(tools/kernel_flash/l4t_initrd_flash.sh))
    C(7323) Orin NX 16GB, C(7423) Orin NX 8GB, C(7523) Orin Nano 8GB, C(7623) Orin Nano 4GB;
    C(7023) and C(7223) AGX Orin.
  - With O(bsp_dir) and O(board_config), the module family comes from the common file the
    board config sources (C(p3767.conf.common) Orin NX/Nano, C(p3701.conf.common) AGX Orin) and
    a board of another family is refused.
  - With O(storage) too, a (family, storage) pair the flash table of M(n3x.cluster.jetson_flash)
    refuses is refused here at once.
  - Fails with a message naming what it found when no board is in recovery mode, when the
    board found is the wrong module, when O(storage) is C(sd) and the module has no microSD slot,
    or when more than one fits and no O(usb_path) says which. With O(required=false) it returns
    the reason in RV(reason) instead (for polling with C(until)). It never changes anything.
options:
  bsp_dir:
    description: The BSP's C(Linux_for_Tegra) directory, to read O(board_config) from.
    type: path
  board_config:
    description: The L4T board config to be flashed (C(jetson-orin-nano-devkit), for example); needs O(bsp_dir).
    type: str
  storage:
    description: The storage to be flashed; C(sd) also refuses modules without a microSD slot.
    type: str
    choices: [nvme, usb, sd, emmc]
  usb_path:
    description: Select the board at this sysfs USB path (C(1-2), C(3-1.4)).
    type: str
  required:
    description:
      - Fail when no suitable board is found. With C(false), return what was found and
        report C(selected) as null instead.
    type: bool
    default: true
  sysfs_root:
    description: Where the USB devices are listed in sysfs.
    type: path
    default: /sys/bus/usb/devices
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - n3x.cluster.attributes
notes:
  - A board in recovery mode shows in C(lsusb) as C(ID 0955:7523 NVIDIA Corp. APX), for example.
    A booted Jetson shows other NVIDIA ids, which are reported as not in recovery mode.
seealso:
  - module: n3x.cluster.jetson_flash
author:
  - n3x developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Find the Orin Nano to flash
  n3x.cluster.jetson_recovery:
    bsp_dir: /srv/l4t/R36.4.3/Linux_for_Tegra
    board_config: jetson-orin-nano-devkit
    usb_path: 1-2
  register: recovery

- name: List boards in recovery mode without failing
  n3x.cluster.jetson_recovery:
    required: false
  register: recovery
"""

RETURN = r"""
boards:
  description: Every Jetson board in recovery mode.
  returned: always
  type: list
  elements: dict
  contains:
    usb_id:
      description: C(vendor:product).
      type: str
      sample: "0955:7523"
    module:
      description: The module the product id stands for.
      type: str
      sample: Jetson Orin Nano 8GB
    family:
      description: The module family, C(p3767) (Orin NX/Nano) or C(p3701) (AGX Orin).
      type: str
    usb_path:
      description: The sysfs USB path (null when the list came from lsusb).
      type: str
      sample: 1-2
    bus:
      description: USB bus number.
      type: int
    device:
      description: USB device number.
      type: int
selected:
  description: The board chosen by O(board_config) and O(usb_path) (null when none fits and O(required=false)).
  returned: always
  type: dict
other_nvidia_devices:
  description: NVIDIA USB devices that are not in recovery mode (booted boards, for example).
  returned: always
  type: list
  elements: dict
source:
  description: Where the device list came from, C(sysfs), C(lsusb) or C(none).
  returned: always
  type: str
reason:
  description: Why no board was selected.
  returned: when none was
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson import device_lister, find_boards
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson_bsp import BspError, flash_method, module_family


def main():
    module = AnsibleModule(
        argument_spec={
            "bsp_dir": {"type": "path"},
            "board_config": {"type": "str"},
            "storage": {"type": "str", "choices": ["nvme", "usb", "sd", "emmc"]},
            "usb_path": {"type": "str"},
            "required": {"type": "bool", "default": True},
            "sysfs_root": {"type": "path", "default": "/sys/bus/usb/devices"},
        },
        required_together=[("bsp_dir", "board_config")],
        supports_check_mode=True,
    )
    p = module.params
    family = None
    if p["board_config"]:
        try:
            family = module_family(p["bsp_dir"], p["board_config"])
            if p["storage"]:
                flash_method(family, p["storage"])  # a pair the table refuses is refused here too, before any wait
        except BspError as exc:
            module.fail_json(msg=str(exc), changed=False)
    result = find_boards(device_lister(module, p["sysfs_root"]), family, p["usb_path"], p["required"], os.uname().nodename, p["storage"])
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
