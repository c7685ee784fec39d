# Copyright: n3x developers
# MIT License
"""An nvpmodel power mode by name, resolved through the board's /etc/nvpmodel.conf."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: jetson_power_mode
author: n3x developers
version_added: 0.2.0
short_description: Resolve an nvpmodel power mode name to the board's mode id
description:
  - Reads the C(< POWER_MODEL ID=n NAME=x >) lines of C(/etc/nvpmodel.conf) and returns the id of
    the mode named O(name), since ids differ by module (the Orin Nano's C(15W) is 0, its C(7W) 1).
  - "With the output of C(nvpmodel -q) (C(NV Power Mode: 15W), then the id) it also says whether
    the board is in another mode now. Fails naming the board's modes when O(name) is not one."
positional: _input, name, query_output
options:
  _input:
    description: The text of C(/etc/nvpmodel.conf).
    type: str
    required: true
  name:
    description: The mode's name, for example C(15W) or C(MAXN).
    type: str
    required: true
  query_output:
    description: The output of C(nvpmodel -q).
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Resolve the power mode
  ansible.builtin.set_fact:
    mode: "{{ conf_text | n3x.cluster.jetson_power_mode('15W', query.stdout) }}"
"""

RETURN = r"""
_value:
  description: C(id), C(name), C(current_id), C(current_name) and C(change) (true when the board is in another mode).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson_board import BoardError, power_mode


def jetson_power_mode(conf_text, name, query_output=""):
    try:
        return power_mode(conf_text, name, query_output or "")
    except BoardError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"jetson_power_mode": jetson_power_mode}
