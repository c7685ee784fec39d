# Copyright: n3x developers
# MIT License
"""Every file a profile renders for the inventory's nodes, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: node_files
author: n3x developers
version_added: 0.1.0
short_description: The rendered file tree of every planned node
description:
  - Takes the profile and the C(nodes) list returned by M(n3x.cluster.network_profile) and
    returns one item per file, with a path of the form C(<node>/<path on the node>), that
    is C(<node>/etc/systemd/network/*) for every node and C(<node>/etc/rancher/k3s/config.yaml)
    for nodes with a k3s role.
  - This is what C(playbooks/render.yml) writes below C(render_dir/<node>/).
positional: _input, nodes
options:
  _input:
    description: A network profile.
    type: dict
    required: true
  nodes:
    description: The C(nodes) list of M(n3x.cluster.network_profile) (name and k3s_role per node).
    type: list
    elements: dict
    required: true
  servers:
    description: All k3s servers of the inventory.
    type: list
    elements: str
    default: []
  k3s_options:
    description: Keyword options of the P(n3x.cluster.k3s_config#filter) filter (disable, extra, ...).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Write every node's files below out/
  n3x.cluster.managed_files:
    dest: out
    files: >-
      {{ n3x_profile.profile
         | n3x.cluster.node_files(n3x_profile.nodes, servers=groups['k3s_servers'])
         | ansible.utils.remove_keys(target=['node']) }}
"""

RETURN = r"""
_value:
  description: One item per file, sorted by node and path.
  type: list
  elements: dict
  contains:
    node:
      description: Node name.
      type: str
    path:
      description: C(<node>/<path on the node>), like C(agent-1/etc/systemd/network/20-n3x-eth1.network).
      type: str
    content:
      description: File text.
      type: str
    mode:
      description: File mode (C(0600) for the k3s config, C(0644) for units).
      type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_render import K3S_CONFIG_PATH
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_render import node_files as render_files
from ansible_collections.n3x.cluster.plugins.plugin_utils.profile_filter import profile_filter


@profile_filter
def node_files(profile, nodes, servers=(), k3s_options=None):
    items = []
    try:
        for node in nodes:
            name = node["name"]
            for path, content in render_files(profile, name, node.get("k3s_role"), servers=list(servers), **(k3s_options or {})).items():
                items.append({"node": name, "path": f"{name}/{path}", "content": content, "mode": "0600" if path == K3S_CONFIG_PATH else "0644"})
    except (KeyError, TypeError, AttributeError) as exc:
        raise AnsibleFilterError(f"node_files: nodes must be the nodes list of n3x.cluster.network_profile ({exc})") from None
    return items


class FilterModule:
    def filters(self):
        return {"node_files": node_files}
