# Copyright: n3x developers
# MIT License
"""Whether `k3s --version` reports the wanted release, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: k3s_version_problem
author: n3x developers
version_added: 0.2.0
short_description: Why a node's k3s is not the wanted version, or an empty string
description:
  - Reads the first line of C(k3s --version) (C(k3s version v1.35.0+k3s3 (f061615c))), as
    k3s-io/k3s-ansible's k3s_upgrade role does, and returns an empty string when it names
    O(wanted), or a message naming the node, what it reports and what was wanted.
positional: _input, node, wanted
options:
  _input:
    description: The output of k3s --version.
    type: str
    required: true
  node:
    description: The node's name.
    type: str
    required: true
  wanted:
    description: The wanted release tag.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Check the installed version
  ansible.builtin.assert:
    that: problem | length == 0
    fail_msg: "{{ problem }}"
  vars:
    problem: "{{ k3s_version_output.stdout | n3x.cluster.k3s_version_problem(inventory_hostname, k3s_version) }}"
"""

RETURN = r"""
_value:
  description: An empty string, or the problem.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s_node import version_problem


def k3s_version_problem(output, node, wanted):
    if not isinstance(output, str):
        raise AnsibleFilterError(f"k3s_version_problem: expects the text of k3s --version, got {type(output).__name__}")
    return version_problem(node, output, wanted)


class FilterModule:
    def filters(self):
        return {"k3s_version_problem": k3s_version_problem}
