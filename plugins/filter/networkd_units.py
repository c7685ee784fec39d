# Copyright: n3x developers
# MIT License
"""The systemd-networkd units of one node, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: networkd_units
author: n3x developers
version_added: 0.1.0
short_description: systemd-networkd .netdev/.network units for one node of a profile
description:
  - Validates the profile, then returns the node's units as a mapping of file name to text,
    ready for C(/etc/systemd/network).
  - Flat static networks get C(DHCP=no), C(IPv6AcceptRA=no), C(LinkLocalAddressing=no) and
    C(Address=IP/prefix); DHCP networks get C(DHCP=ipv4) and no address; VLANs get a
    C(Kind=vlan) netdev and a network each, the trunk carries the C(VLAN=) lines; bonds get a
    C(Kind=bond) netdev with the profile's mode and timings and one network per member.
  - Interfaces the profile does not name (a management NIC) get no unit.
positional: _input, node
options:
  _input:
    description: A network profile (as returned by M(n3x.cluster.network_profile) or loaded from YAML).
    type: dict
    required: true
  node:
    description: The node's name in the profile's C(ip_addresses).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Install the node's units
  ansible.builtin.copy:
    dest: "/etc/systemd/network/{{ item.key }}"
    content: "{{ item.value }}"
    mode: "0644"
  loop: "{{ n3x_profile.profile | n3x.cluster.networkd_units(inventory_hostname) | dict2items }}"
"""

RETURN = r"""
_value:
  description: File name (like C(30-n3x-eth1.200.network)) to unit text, sorted by file name.
  type: dict
"""

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_networkd import networkd_units as render_units
from ansible_collections.n3x.cluster.plugins.plugin_utils.profile_filter import profile_filter

networkd_units = profile_filter(render_units)


class FilterModule:
    def filters(self):
        return {"networkd_units": networkd_units}
