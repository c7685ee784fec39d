# Copyright: n3x developers
# MIT License
"""What to do with a Jetson's Longhorn data partition, from what blkid finds on it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: jetson_data_disk
author: n3x developers
version_added: 0.2.0
short_description: Decide whether to format, mount, wipe or refuse a data partition
description:
  - Takes the exit code and output of C(blkid --probe --output export DEVICE) (exit 2 means no
    signature at all) and returns C(format) for an empty partition, C(mount) for the file
    system n3x made (recognised by its label), and C(refuse) for anything else, which may hold
    data, unless O(wipe) is true (then C(wipe)).
positional: _input, export, label, wipe, device
options:
  _input:
    description: blkid's exit code.
    type: int
    required: true
  export:
    description: blkid's output (C(KEY=value) lines).
    type: str
    required: true
  label:
    description: The label n3x gives the file system it creates.
    type: str
    required: true
  wipe:
    description: Erase a foreign signature instead of refusing.
    type: bool
    default: false
  device:
    description: The device, for the message.
    type: str
    default: the data device
"""

EXAMPLES = r"""
- name: Decide
  ansible.builtin.set_fact:
    decision: "{{ probe.rc | n3x.cluster.jetson_data_disk(probe.stdout, 'n3x-longhorn', false, '/dev/nvme0n1p2') }}"
"""

RETURN = r"""
_value:
  description: C(action) (format, mount, wipe or refuse), C(found) (blkid's fields) and C(msg).
  type: dict
"""

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson_board import data_disk


def jetson_data_disk(rc, export, label, wipe=False, device="the data device"):
    return data_disk(int(rc), export or "", label, bool(wipe), device)


class FilterModule:
    def filters(self):
        return {"jetson_data_disk": jetson_data_disk}
