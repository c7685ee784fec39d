# Copyright: n3x developers
# MIT License
"""Whether a token joins the cluster a server was bootstrapped with, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: k3s_token_matches
author: n3x developers
version_added: 0.2.0
short_description: Whether a k3s token matches a server's bootstrapped token
description:
  - Parses both tokens as k3s does (pkg/clientaccess/token.go) and compares the secret (and
    the CA hash, when the given token is a full C(K10) token) with the server's
    C(/var/lib/rancher/k3s/server/token) (C(K10<ca hash>::server:<secret>), docs.k3s.io
    cli/token).
  - Use it in a task with C(no_log), then assert on the boolean.
positional: _input, bootstrapped
options:
  _input:
    description: The token n3x would use.
    type: str
    required: true
  bootstrapped:
    description: The content of the server's bootstrapped token file.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Compare the tokens
  ansible.builtin.set_fact:
    token_ok: "{{ k3s_token | n3x.cluster.k3s_token_matches(bootstrapped.content | b64decode) }}"
  no_log: true
"""

RETURN = r"""
_value:
  description: True when the token joins that cluster.
  type: bool
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s_node import token_matches


def k3s_token_matches(given, bootstrapped):
    if not isinstance(given, str) or not isinstance(bootstrapped, str):
        raise AnsibleFilterError("k3s_token_matches: expects two strings")
    return token_matches(given, bootstrapped)


class FilterModule:
    def filters(self):
        return {"k3s_token_matches": k3s_token_matches}
