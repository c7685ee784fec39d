# Copyright: n3x developers
# MIT License
"""What a flashed Jetson reports after its first boot, checked against what was flashed."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: jetson_board
author: n3x developers
version_added: 0.2.0
short_description: Check a Jetson's device-tree model and L4T release against the expected ones
description:
  - "Reads the text of C(/proc/device-tree/model) and C(/etc/nv_tegra_release) (first line
    C(# R36 (release), REVISION: 4.3, ...)) and returns the model, the release (C(R36.4.3)) and
    every mismatch with the expected module family and release."
  - Module families come from the board config that was flashed, C(p3767) (Jetson Orin NX/Nano,
    model containing C(Orin Nano) or C(Orin NX)) or C(p3701) (Jetson AGX Orin).
positional: _input, release_text, expected_family, expected_release
options:
  _input:
    description: The text of C(/proc/device-tree/model).
    type: str
    required: true
  release_text:
    description: The text of C(/etc/nv_tegra_release).
    type: str
    required: true
  expected_family:
    description: C(p3767), C(p3701), or empty to skip the check.
    type: str
    default: ""
  expected_release:
    description: C(R36.4) (any R36.4.x), C(R36.4.3), or empty to skip the check.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Check the board
  ansible.builtin.set_fact:
    board: "{{ model_text | n3x.cluster.jetson_board(release_text, 'p3767', 'R36.4') }}"
"""

RETURN = r"""
_value:
  description: C(model), C(release) (null when unreadable) and C(problems), a list of mismatches.
  type: dict
"""

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson_board import board_check


def jetson_board(model_text, release_text, expected_family="", expected_release=""):
    return board_check(model_text, release_text, expected_family or "", expected_release or "")


class FilterModule:
    def filters(self):
        return {"jetson_board": jetson_board}
