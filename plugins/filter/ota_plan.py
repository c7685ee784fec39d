# Copyright: n3x developers
# MIT License
"""The stages of an over-the-air rollout, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: ota_plan
author: n3x developers
version_added: 0.3.0
short_description: Plan a staged rollout - a canary, then batches
description:
  - Splits the nodes, in the given order, into a canary batch of O(canary) nodes and then
    batches of O(batch) nodes, a number or a percentage of the whole fleet (rounded up).
  - RV(_value.sizes) is what a play's C(serial) takes; C(playbooks/ota.yml) uses it.
positional: _input, canary, batch
options:
  _input:
    description: The nodes, in rollout order.
    type: list
    elements: str
    required: true
  canary:
    description: Nodes in the first batch; 0 for none.
    type: int
    default: 1
  batch:
    description: Nodes per later batch - a number such as C(2) or a percentage such as C(25%).
    type: str
    default: 25%
"""

EXAMPLES = r"""
- name: Plan the rollout
  ansible.builtin.set_fact:
    ota_plan: "{{ ansible_play_hosts_all | n3x.cluster.ota_plan(1, '25%') }}"
"""

RETURN = r"""
_value:
  description: C(nodes), C(batches) (lists of nodes), C(sizes) (their lengths) and C(canary) (whether the first batch is one).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_ota import OtaError, plan_rollout


def ota_plan(nodes, canary=1, batch="25%"):
    try:
        return plan_rollout(nodes, canary, batch)
    except OtaError as exc:
        raise AnsibleFilterError(f"ota_plan: {exc}") from exc


class FilterModule:
    def filters(self):
        return {"ota_plan": ota_plan}
