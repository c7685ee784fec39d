# Copyright: n3x developers
# MIT License
"""The server that initialises the cluster, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: k3s_init_server
author: n3x developers
version_added: 0.1.0
short_description: The k3s server that initialises the cluster
description:
  - Returns the server whose cluster address is the host of the profile's C(server_api). That
    server gets C(cluster-init) in its C(config.yaml) and every other node joins it.
  - Returns null when C(server_api) is not the address of one of O(servers) (a VIP or an
    existing cluster); then every server joins C(server_api).
positional: _input, servers
options:
  _input:
    description: A network profile.
    type: dict
    required: true
  servers:
    description: The inventory's k3s servers (usually C(groups['k3s_servers'])).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Find the server that initialises the cluster
  ansible.builtin.set_fact:
    k3s_init_node: "{{ n3x_profile.profile | n3x.cluster.k3s_init_server(groups['k3s_servers']) }}"
"""

RETURN = r"""
_value:
  description: The init server's inventory name, or null.
  type: str
"""

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s import init_server
from ansible_collections.n3x.cluster.plugins.plugin_utils.profile_filter import profile_filter


def _init_server(profile, servers):
    return init_server(profile, list(servers))


k3s_init_server = profile_filter(_init_server)


class FilterModule:
    def filters(self):
        return {"k3s_init_server": k3s_init_server}
