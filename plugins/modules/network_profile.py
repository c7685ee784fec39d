#!/usr/bin/python
# Copyright: n3x developers
# MIT License
"""Load and validate an n3x network profile (the work happens in the action plugin)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: network_profile
short_description: Load and validate an n3x network profile
version_added: 0.1.0
description:
  - Reads a network profile (pure data, see C(profiles/*.yml)) by name or path, checks every
    rule of the profile format and returns the normalised profile with defaults filled in.
  - Runs on the controller (it is an action plugin), so the profile file is read where the
    playbook runs and no managed host is touched.
  - >-
    Any problem fails the task with one line per problem, each naming the file and the field
    path, for example
    C(profiles/x.yml: ip_addresses.server-2.cluster: '192.168.1.300' is not an IPv4 address).
  - Also maps the inventory onto the profile, giving each node's k3s role, cluster address,
    interfaces and the kernel modules its network needs, and warns about an even number of
    servers (embedded etcd quorum).
options:
  profile:
    description:
      - A profile name (a file C(NAME.yml) in O(profiles_dir)) or a path to a YAML file.
    type: str
    required: true
  profiles_dir:
    description:
      - Where profile names are looked up. Defaults to the collection's C(profiles/) directory.
    type: path
  servers:
    description: Inventory nodes that run C(k3s server) (usually C(groups['k3s_servers'])).
    type: list
    elements: str
    default: []
  agents:
    description: Inventory nodes that run C(k3s agent) (usually C(groups['k3s_agents'])).
    type: list
    elements: str
    default: []
  nodes:
    description:
      - The inventory nodes to plan for, in order. Defaults to O(servers) then O(agents).
      - Nodes that the profile does not describe are skipped with a warning.
    type: list
    elements: str
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  action:
    description: Runs on the controller through its action plugin.
    support: full
  platform:
    platforms: all
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
author:
  - n3x developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Load the vlans profile for the lab inventory
  n3x.cluster.network_profile:
    profile: vlans
    servers: "{{ groups['k3s_servers'] }}"
    agents: "{{ groups['k3s_agents'] }}"
  register: n3x_profile
  run_once: true

- name: Load a profile kept outside the collection
  n3x.cluster.network_profile:
    profile: /srv/site/profiles/plant-3.yml
"""

RETURN = r"""
path:
  description: The profile file that was read.
  returned: success
  type: str
  sample: /work/n3x/profiles/vlans.yml
name:
  description: The profile's name (its file name without C(.yml)).
  returned: success
  type: str
  sample: vlans
profile:
  description: The validated profile with defaults filled in (MAC addresses in lower case).
  returned: success
  type: dict
nodes:
  description: One entry per inventory node that the profile describes.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: Inventory name.
      type: str
    k3s_role:
      description: C(server), C(agent) or null when the node is in neither group.
      type: str
    address:
      description: The node's cluster address (its k3s node-ip).
      type: str
    interfaces:
      description: Network role to interface name for this node.
      type: dict
    networkd_interfaces:
      description:
        - Interfaces systemd-networkd must configure, in bring-up order, as C(NAME:OPERSTATE),
          the least operational state that proves each (for C(systemd-networkd-wait-online -i)).
      type: list
      elements: str
    physical_interfaces:
      description: The NICs the node needs cabled (the trunk NIC or the bond members).
      type: list
      elements: str
    mac_address:
      description: The profile's MAC for the node, if it gives one.
      type: str
    kernel_modules:
      description: Kernel modules the network needs (8021q, bonding).
      type: list
      elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_module import exit_with
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import ProfileError, load_profile
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_render import plan_nodes


def run(params, default_profiles_dir):
    """The module's result dict (shared with the action plugin)."""
    profiles_dir = params.get("profiles_dir") or default_profiles_dir
    try:
        path, profile = load_profile(params["profile"], profiles_dir)
        nodes, warnings = plan_nodes(profile, params.get("servers") or [], params.get("agents") or [], params.get("nodes"))
    except ProfileError as exc:
        return {"failed": True, "msg": str(exc)}
    name = os.path.basename(path).rsplit(".", 1)[0]
    return {"changed": False, "path": os.path.abspath(path), "name": name, "profile": profile, "nodes": nodes, "warnings": warnings}


ARGUMENT_SPEC = {
    "profile": {"type": "str", "required": True},
    "profiles_dir": {"type": "path"},
    "servers": {"type": "list", "elements": "str", "default": []},
    "agents": {"type": "list", "elements": "str", "default": []},
    "nodes": {"type": "list", "elements": "str"},
}


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = run(module.params, os.path.join(os.getcwd(), "profiles"))
    exit_with(module, result)


if __name__ == "__main__":
    main()
