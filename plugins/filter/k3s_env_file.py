# Copyright: n3x developers
# MIT License
"""The environment file of a node's k3s unit, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: k3s_env_file
author: n3x developers
version_added: 0.2.0
short_description: Text of /etc/systemd/system/k3s.service.env or k3s-agent.service.env
description:
  - The file install.sh creates with mode 0600 (create_env_file) and the unit reads with
    C(EnvironmentFile=-); k3s passes its proxy variables to containerd and the kubelet
    (docs.k3s.io advanced, "Configuring an HTTP proxy").
  - With O(http_proxy) or O(https_proxy) it holds C(HTTP_PROXY), C(HTTPS_PROXY) and
    C(NO_PROXY), loopback, C(localhost), C(.svc), C(.cluster.local), the node's networks (one
    per network role of the profile), the host of C(server_api), the profile's cluster and
    service CIDRs, then O(no_proxy). With O(containerd_only) the names get the C(CONTAINERD_)
    prefix, which leaves k3s and the kubelet direct.
  - Without a proxy it holds only its header line.
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
    description: The node's k3s role.
    type: str
    choices: [server, agent]
    required: true
  http_proxy:
    description: The proxy URL for HTTP.
    type: str
    default: ""
  https_proxy:
    description: The proxy URL for HTTPS.
    type: str
    default: ""
  no_proxy:
    description: More hosts, domains or CIDRs that bypass the proxy.
    type: list
    elements: str
    default: []
  containerd_only:
    description: Set the proxy for containerd only (C(CONTAINERD_HTTP_PROXY) and so on).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Write the unit's environment file
  n3x.cluster.managed_files:
    dest: /etc/systemd/system
    prune: false
    files:
      - path: k3s.service.env
        mode: "0600"
        content: "{{ profile | n3x.cluster.k3s_env_file(inventory_hostname, 'server', https_proxy='http://proxy:3128') }}"
"""

RETURN = r"""
_value:
  description: The file's text.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s_node import NodeCheckError, env_file
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import require_node
from ansible_collections.n3x.cluster.plugins.plugin_utils.profile_filter import profile_filter


def _env_file(profile, node, role, http_proxy="", https_proxy="", no_proxy=(), containerd_only=False):
    require_node(profile, node)
    try:
        return env_file(profile, node, role, http_proxy, https_proxy, list(no_proxy or ()), containerd_only)
    except NodeCheckError as exc:
        raise AnsibleFilterError(f"k3s_env_file: {node}: {exc}") from None


k3s_env_file = profile_filter(_env_file)


class FilterModule:
    def filters(self):
        return {"k3s_env_file": k3s_env_file}
