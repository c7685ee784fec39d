# Copyright: n3x developers
# MIT License
"""The k3s config.yaml mapping of one node, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: k3s_config
author: n3x developers
version_added: 0.1.0
short_description: k3s config.yaml settings for one node of a profile
description:
  - Validates the profile and returns the flat mapping for C(/etc/rancher/k3s/config.yaml).
  - Every node gets C(node-name), C(node-ip), C(flannel-iface) (its cluster interface) and
    C(token-file). Servers also get C(agent-token-file), C(advertise-address), C(tls-san),
    C(cluster-cidr), C(service-cidr), C(disable) and C(write-kubeconfig-mode).
  - Tokens are scoped (docs.k3s.io cli/token), a server's C(token-file) is O(token_file) (the
    server token), an agent's is O(agent_token_file), so no agent holds the server token.
  - The server whose cluster address is the host of the profile's C(server_api) gets
    C(cluster-init), every other node gets C(server).
  - Every key, O(extra) included, is checked against the flag table of O(version)'s minor
    release for the node's command; unknown keys, server-only keys on an agent, wrong value
    types, secrets (C(token), or C(datastore-endpoint) and the other secret-bearing flags outside
    O(secret)) and overrides of profile-owned keys are errors. A minor without a table is an
    error unless O(allow_other_minor).
positional: _input, node, role
options:
  _input:
    description: A network profile.
    type: dict
    required: true
  node:
    description: The node's name in the profile.
    type: str
    required: true
  role:
    description: The node's k3s command.
    type: str
    choices: [server, agent]
    required: true
  servers:
    description: All k3s servers of the inventory (decides which one initialises the cluster).
    type: list
    elements: str
    default: []
  disable:
    description: Packaged components servers do not deploy.
    type: list
    elements: str
    default: [traefik, servicelb]
  write_kubeconfig_mode:
    description: File mode of the kubeconfig k3s writes on servers.
    type: str
    default: "0600"
  token_file:
    description: Path of the 0600 file that holds the server token on a server.
    type: str
    default: /etc/rancher/k3s/token
  agent_token_file:
    description: Path of the 0600 file that holds the agent token (servers and agents).
    type: str
    default: /etc/rancher/k3s/agent-token
  secret:
    description:
      - Secret-bearing flags without a C(-file) variant (C(datastore-endpoint),
        C(etcd-s3-secret-key)...), merged last. Hand it over only in tasks with C(no_log).
    type: dict
    default: {}
  version:
    description:
      - The k3s release whose minor's flag table checks the keys; the newest table when
        omitted.
    type: str
  allow_other_minor:
    description:
      - Check against the newest table when O(version)'s minor has none, instead of
        failing.
    type: bool
    default: false
  extra:
    description: More k3s flags (long names), checked like the generated ones.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Write config.yaml
  ansible.builtin.copy:
    dest: /etc/rancher/k3s/config.yaml
    content: >-
      {{ n3x_profile.profile
         | n3x.cluster.k3s_config(inventory_hostname, 'server', servers=groups['k3s_servers'])
         | ansible.builtin.to_nice_yaml }}
    mode: "0600"
"""

RETURN = r"""
_value:
  description: k3s flag (long name) to value.
  type: dict
"""

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s import k3s_config as render_config
from ansible_collections.n3x.cluster.plugins.plugin_utils.profile_filter import profile_filter

k3s_config = profile_filter(render_config)


class FilterModule:
    def filters(self):
        return {"k3s_config": k3s_config}
