# Copyright: n3x developers
# MIT License
"""A node's networkd units and module list as files to install, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: networkd_files
author: n3x developers
version_added: 0.1.0
short_description: Everything the networkd role installs on one node, as a file list
description:
  - The node's systemd-networkd units (see P(n3x.cluster.networkd_units#filter)) with absolute
    paths below O(unit_dir), plus C(n3x-network.conf) in O(modules_dir) naming the kernel
    modules (8021q, bonding) the network needs at boot. The module list is written even when
    empty, so a profile that drops VLANs or bonds also stops loading their modules.
  - Shaped for M(n3x.cluster.managed_files) with O(n3x.cluster.managed_files#module:dest=/).
positional: _input, node, unit_dir
options:
  _input:
    description: A network profile.
    type: dict
    required: true
  node:
    description: The node's name in the profile.
    type: str
    required: true
  unit_dir:
    description: Directory of the units.
    type: str
    default: /etc/systemd/network
  modules_dir:
    description: Directory of the module list.
    type: str
    default: /etc/modules-load.d
"""

EXAMPLES = r"""
- name: Install the node's network
  n3x.cluster.managed_files:
    dest: /
    files: "{{ n3x_profile.profile | n3x.cluster.networkd_files(inventory_hostname) }}"
"""

RETURN = r"""
_value:
  description: One C({path, content}) item per file, absolute paths.
  type: list
  elements: dict
"""

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_networkd import networkd_files as render_files
from ansible_collections.n3x.cluster.plugins.plugin_utils.profile_filter import profile_filter

networkd_files = profile_filter(render_files)


class FilterModule:
    def filters(self):
        return {"networkd_files": networkd_files}
