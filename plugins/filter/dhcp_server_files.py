# Copyright: n3x developers
# MIT License
"""The files of a profile's DHCP server, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: dhcp_server_files
author: n3x developers
version_added: 0.1.0
short_description: Files that make a Debian host the DHCP server a profile describes
description:
  - For a profile whose addressing is C(dhcp), returns absolute path to text for a dnsmasq-based
    DHCP server, that is the server's own static address on the cluster network (a
    systemd-networkd unit), C(/etc/n3x/dnsmasq.conf) with the profile's range and one static
    lease per node by MAC (no router and no DNS option), and C(n3x-dhcp.service).
  - The lab uses it for its DHCP infrastructure VM; a site can use it for a real server.
positional: _input, interface
options:
  _input:
    description: A network profile whose addressing is C(dhcp).
    type: dict
    required: true
  interface:
    description: The server's interface on the cluster network.
    type: str
    default: eth1
"""

EXAMPLES = r"""
- name: Install the DHCP server's files
  n3x.cluster.managed_files:
    dest: /
    files: "{{ n3x_profile.profile | n3x.cluster.dhcp_server_files('eth1') | dict2items(key_name='path', value_name='content') }}"
"""

RETURN = r"""
_value:
  description: Absolute path to file text.
  type: dict
"""

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_dhcp import dhcp_server_files as render_files
from ansible_collections.n3x.cluster.plugins.plugin_utils.profile_filter import profile_filter

dhcp_server_files = profile_filter(render_files)


class FilterModule:
    def filters(self):
        return {"dhcp_server_files": dhcp_server_files}
