# Copyright: n3x developers
# MIT License
"""The bounded Ready wait of one node, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: k3s_ready_timeout
author: n3x developers
version_added: 0.2.0
short_description: How long to wait for a node to become Ready, scaled by the accelerator
description:
  - Returns C(seconds) and C(why), O(_input) seconds on real hardware and KVM guests, four
    times as long on a TCG lab VM (QEMU's software CPU), whose accelerator the lab inventory
    records as C(n3x_lab_accel).
positional: _input, accel
options:
  _input:
    description: The base wait in seconds.
    type: int
    required: true
  accel:
    description: The lab VM's accelerator (tcg or kvm); empty for a real host.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Decide the wait
  ansible.builtin.set_fact:
    wait: "{{ 300 | n3x.cluster.k3s_ready_timeout(n3x_lab_accel | default('')) }}"
"""

RETURN = r"""
_value:
  description: seconds and why.
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s_node import ready_timeout


def k3s_ready_timeout(base, accel=""):
    try:
        return ready_timeout(int(base), accel)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"k3s_ready_timeout: {base!r} is not a number of seconds") from None


class FilterModule:
    def filters(self):
        return {"k3s_ready_timeout": k3s_ready_timeout}
