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
  - Product ids (L4T r36 Quick Start) C(7323) Orin NX 16GB, C(7423) Orin NX 8GB, C(7523)
    Orin Nano 8GB, C(7623) Orin Nano 4GB; C(7023) and C(7223) AGX Orin.
  - Fails with a message naming what it found when no board is in recovery mode, when the
    board found is the wrong module for O(board_config), or when more than one fits and no
    O(usb_path) says which. It never changes anything.
options:
  board_config:
    description:
      - The L4T board config to be flashed (C(jetson-orin-nano-devkit), for example). A
        board whose module does not fit it is refused.
    type: str
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
  - n3x.cluster.attributes
notes:
  - A board in recovery mode shows in C(lsusb) as C(ID 0955:7523 NVIDIA Corp. APX), for example.
    A booted Jetson shows other NVIDIA ids, which are reported as not in recovery mode.
seealso:
  - module: n3x.cluster.jetson_flash
author:
  - n3x developers
"""

EXAMPLES = r"""
- name: Find the Orin Nano to flash
  n3x.cluster.jetson_recovery:
    board_config: jetson-orin-nano-devkit
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
    board_configs:
      description: Board configs that suit the module.
      type: list
      elements: str
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
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson import device_lister, find_boards


def main():
    module = AnsibleModule(
        argument_spec={
            "board_config": {"type": "str"},
            "usb_path": {"type": "str"},
            "required": {"type": "bool", "default": True},
            "sysfs_root": {"type": "path", "default": "/sys/bus/usb/devices"},
        },
        supports_check_mode=True,
    )
    p = module.params
    result = find_boards(device_lister(module, p["sysfs_root"]), p["board_config"], p["usb_path"], p["required"], os.uname().nodename)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
