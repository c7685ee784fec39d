# Copyright: n3x developers
# MIT License
"""The commands NVIDIA's flash scripts call on the flashing host, for a storage."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: jetson_host_tools
author: n3x developers
version_added: 0.2.0
short_description: The host commands a Jetson flash to a storage needs
description:
  - "Returns the names of the commands the flash table's command for this storage calls on the
    flashing host (C(abootimg), C(dtc), C(xmllint), ..., and for C(l4t_initrd_flash.sh
    --network usb0) C(sshpass), C(exportfs), C(showmount)): the packages
    C(tools/l4t_flash_prerequisites.sh) installs. The same list the M(n3x.cluster.jetson_flash)
    preflight checks, so the C(jetson_flash) role runs the prerequisites script whenever the
    preflight would refuse for a missing command."
positional: _input
options:
  _input:
    description: The storage, C(nvme), C(usb), C(sd) or C(emmc).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Look for the host tools
  ansible.builtin.command:
    argv: "{{ ['sh', '-c', 'for t in \"$@\"; do command -v \"$t\" >/dev/null || echo \"$t\"; done', 'sh'] + ('nvme' | n3x.cluster.jetson_host_tools) }}"
  register: missing_tools
  changed_when: false
"""

RETURN = r"""
_value:
  description: The command names, sorted.
  type: list
  elements: str
"""

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson_bsp import host_tools


def jetson_host_tools(storage):
    return sorted(host_tools(storage))


class FilterModule:
    def filters(self):
        return {"jetson_host_tools": jetson_host_tools}
