# Copyright: n3x developers
# MIT License
"""What keeps a node from draining, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: k3s_drain_blockers
author: n3x developers
version_added: 0.2.0
short_description: The pods still on a node that a drain must evict
description:
  - From the pods on a node (C(kubectl get pods --all-namespaces --field-selector
    spec.nodeName=NODE)), the ones a drain still has to evict, as C(namespace/name (phase,
    owner)); DaemonSet pods, mirror pods and finished pods do not block C(kubectl drain
    --ignore-daemonsets).
positional: _input, node
options:
  _input:
    description: The pod objects.
    type: list
    required: true
    elements: dict
  node:
    description: The node being drained.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Report what blocked the drain
  ansible.builtin.fail:
    msg: "{{ (pods.stdout | from_json)['items'] | n3x.cluster.k3s_drain_blockers(inventory_hostname) }}"
"""

RETURN = r"""
_value:
  description: One line per blocking pod.
  type: list
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s_day2 import drain_blockers


def k3s_drain_blockers(pods, node):
    if not isinstance(pods, list):
        raise AnsibleFilterError(f"k3s_drain_blockers: expects the list of pod objects, got {type(pods).__name__}")
    return drain_blockers(pods, node)


class FilterModule:
    def filters(self):
        return {"k3s_drain_blockers": k3s_drain_blockers}
