# Copyright: n3x developers
# MIT License
"""What a reset covers and whether etcd allows it, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: k3s_reset_plan
author: n3x developers
version_added: 0.2.0
short_description: Which nodes leave a running cluster on reset, or why etcd refuses
description:
  - From the nodes being reset and the inventory's servers and agents, C(whole_cluster) (no
    server stays), the leaving C(servers) and C(agents), the C(staying_servers), and
    C(refusal), why a partial reset cannot remove those servers, or an empty string. It
    refuses the init server (O(init_server), server_api's host, which cluster.yml would
    initialise a new cluster on when it is added again) and, once O(nodes) are given, a
    removal that would break etcd quorum (a removal must be committed by a quorum of the
    current members, and the remaining members must keep theirs).
positional: _input, servers, agents, nodes, volumes
options:
  _input:
    description: The nodes being reset.
    type: list
    required: true
    elements: str
  servers:
    description: The inventory's k3s servers (the etcd members).
    type: list
    required: true
    elements: str
  agents:
    description: The inventory's k3s agents.
    type: list
    required: true
    elements: str
  nodes:
    description:
      - The node objects (the items of C(k3s kubectl get nodes --output=json) on a staying
        server), for their Ready condition. Without them the quorum is not checked yet.
    type: list
    elements: dict
  volumes:
    description:
      - The persistent volumes (the items of C(k3s kubectl get pv --output=json)), for the
        local-path volumes pinned to a leaving node (returned as C(local_volumes), node to
        volume names).
    type: list
    elements: dict
    default: []
  init_server:
    description: The server the role initialises the cluster on (P(n3x.cluster.k3s_init_server#filter) of the profile).
    type: str
    default: ""
  server_api:
    description: The profile's server_api, for the refusal message.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Decide the reset
  ansible.builtin.set_fact:
    reset: "{{ ansible_play_hosts_all | n3x.cluster.k3s_reset_plan(groups['k3s_servers'], groups['k3s_agents'], nodes) }}"
"""

RETURN = r"""
_value:
  description: whole_cluster, servers, agents, staying_servers, refusal, local_volumes.
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s_day2 import (
    init_server_refusal,
    local_volumes,
    member_removal,
    node_states,
    reset_scope,
)


def k3s_reset_plan(resetting, servers, agents, nodes=None, volumes=(), init_server="", server_api=""):
    for name, value in (("resetting", resetting), ("servers", servers), ("agents", agents), ("nodes", nodes or []), ("volumes", volumes)):
        if not isinstance(value, (list, tuple)):
            raise AnsibleFilterError(f"k3s_reset_plan: {name} must be a list, got {type(value).__name__}")
    scope = reset_scope(list(resetting), list(servers), list(agents))
    scope["refusal"] = init_server_refusal(scope, init_server or "", server_api or "")
    if not scope["refusal"] and nodes is not None and scope["servers"] and not scope["whole_cluster"]:
        ready = [name for name, state in node_states(list(nodes)).items() if state["ready"]]
        scope["refusal"] = member_removal(list(servers), ready, scope["servers"])
    scope["local_volumes"] = local_volumes(list(volumes), scope["servers"] + scope["agents"])
    return scope


class FilterModule:
    def filters(self):
        return {"k3s_reset_plan": k3s_reset_plan}
