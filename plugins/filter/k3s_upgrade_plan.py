# Copyright: n3x developers
# MIT License
"""The order of a k3s upgrade and its refusals, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: k3s_upgrade_plan
author: n3x developers
version_added: 0.2.0
short_description: Which nodes an upgrade changes, in order, or why it is refused
description:
  - Servers first, one at a time in inventory order, then agents (docs.k3s.io
    upgrades/manual); a node already at O(target) is left alone (k3s-io/k3s-ansible
    k3s_upgrade).
  - Refused, before anything changes, with every reason, a node without k3s, a node not
    Ready, a downgrade, a skipped minor (Kubernetes version skew policy).
positional: _input, versions, target, servers, agents
options:
  _input:
    description:
      - The node objects (the items of C(k3s kubectl get nodes --output=json)), for their
        Ready condition.
    type: list
    elements: dict
    required: true
  versions:
    description: Node name to the output of C(k3s --version) on it (empty when k3s is missing).
    type: dict
    required: true
  target:
    description: The wanted release tag.
    type: str
    required: true
  servers:
    description: The inventory's k3s servers.
    type: list
    required: true
    elements: str
  agents:
    description: The inventory's k3s agents.
    type: list
    required: true
    elements: str
"""

EXAMPLES = r"""
- name: Plan the upgrade
  ansible.builtin.set_fact:
    plan: "{{ (nodes.stdout | from_json)['items'] | n3x.cluster.k3s_upgrade_plan(versions, k3s_version, groups['k3s_servers'], groups['k3s_agents']) }}"
"""

RETURN = r"""
_value:
  description: upgrade (the nodes to change, in order) and current (those at the target).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s_day2 import Day2Error, upgrade_nodes, upgrade_plan


def k3s_upgrade_plan(items, versions, target, servers, agents):
    if not isinstance(items, list) or not isinstance(versions, dict):
        raise AnsibleFilterError("k3s_upgrade_plan: expects the node objects (a list) and the versions (a mapping)")
    try:
        return upgrade_plan(target, upgrade_nodes(items, versions), list(servers), list(agents))
    except Day2Error as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"k3s_upgrade_plan": k3s_upgrade_plan}
