#!/usr/bin/python
# Copyright: n3x developers
# MIT License
"""Read a device's A/B update state: the slot it runs, what each slot holds, what GRUB boots next."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: swupdate_state
short_description: Read the A/B update state of this device
version_added: 0.3.0
description:
  - Reports the slot the device runs (C(root=PARTLABEL=rootfs_<slot>) in C(/proc/cmdline)),
    the version and image sha256 that slot holds (C(rootfs_<slot>_version),
    C(rootfs_<slot>_image) in grubenv, which every n3x bundle records), the slot GRUB boots
    next, whether an update waits for confirmation (C(upgrade_available=1)) and swupdate's
    update state marker (C(ustate)).
  - Changes nothing; C(playbooks/ota.yml) reads it before and after each node's update.
options:
  grubenv:
    description: The GRUB environment file the device boots with.
    type: path
    default: /boot/grub/grubenv
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - n3x.cluster.attributes
attributes:
  check_mode:
    support: full
    details: Reads only.
seealso:
  - module: n3x.cluster.swupdate_install
author:
  - n3x developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Read the node's A/B state
  n3x.cluster.swupdate_state:
  register: ab_state

- name: Show it
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }} runs slot {{ ab_state.slot }} ({{ ab_state.version }})"
"""

RETURN = r"""
slot:
  description: The slot the device runs.
  returned: always
  type: str
  sample: a
version:
  description: The version the running slot holds (C(factory) for the image's own), or null when unrecorded.
  returned: always
  type: str
  sample: 2.0.0
image:
  description: sha256 of the image the running slot was written from, or null when unrecorded.
  returned: always
  type: str
next_slot:
  description: The slot GRUB boots next.
  returned: always
  type: str
pending:
  description: Whether an installed update waits to be booted and confirmed (C(upgrade_available=1)).
  returned: always
  type: bool
ustate:
  description: swupdate's update state marker (C(1) installed, C(3) failed), null once confirmed.
  returned: always
  type: str
env:
  description: Every grubenv variable.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_ota as ota
from ansible_collections.n3x.cluster.plugins.module_utils import n3x_swupdate as swu


def main():
    module = AnsibleModule(argument_spec={"grubenv": {"type": "path", "default": "/boot/grub/grubenv"}}, supports_check_mode=True)
    try:
        with open("/proc/cmdline") as handle:
            cmdline = handle.read()
        with open(module.params["grubenv"], errors="replace") as handle:
            env_text = handle.read(4096)
        state = ota.node_state(cmdline, env_text)
    except (OSError, swu.SwupdateError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **state)


if __name__ == "__main__":
    main()
