# Copyright: n3x developers
# MIT License
"""The k3s memory preflight of one node, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: k3s_memory_check
author: n3x developers
version_added: 0.2.0
short_description: Whether a node has the memory k3s needs
description:
  - Reads C(MemTotal) from the text of C(/proc/meminfo) and compares it with the minimum for
    the node's k3s role (docs.k3s.io reference/resource-profiling, embedded etcd; server
    1613 MiB, agent 275 MiB).
  - Returns C(ok), C(have_mib), C(need_mib), C(recommended_mib) (docs.k3s.io
    installation/requirements), C(message) (why it fails, with the numbers) and C(warning)
    (below the recommended size).
positional: _input, node, role
options:
  _input:
    description: The text of /proc/meminfo.
    type: str
    required: true
  node:
    description: The node's name, for the messages.
    type: str
    required: true
  role:
    description: The node's k3s role.
    type: str
    required: true
    choices: [server, agent]
  minimum_mib:
    description: The minimum in MiB instead of k3s's figure.
    type: int
"""

EXAMPLES = r"""
- name: Check the node's memory
  ansible.builtin.assert:
    that: check.ok
    fail_msg: "{{ check.message }}"
  vars:
    check: "{{ meminfo.content | b64decode | n3x.cluster.k3s_memory_check(inventory_hostname, 'server') }}"
"""

RETURN = r"""
_value:
  description: ok, have_mib, need_mib, recommended_mib, message, warning.
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s_node import NodeCheckError, memory_check


def k3s_memory_check(meminfo, node, role, minimum_mib=None):
    try:
        return memory_check(node, role, meminfo, minimum_mib)
    except NodeCheckError as exc:
        raise AnsibleFilterError(f"k3s_memory_check: {node}: {exc}") from None


class FilterModule:
    def filters(self):
        return {"k3s_memory_check": k3s_memory_check}
