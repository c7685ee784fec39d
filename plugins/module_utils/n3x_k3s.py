# Copyright: n3x developers
# MIT License
"""k3s configuration (/etc/rancher/k3s/config.yaml) for one node of a validated profile.

The profile decides the network, the inventory decides who is a server. Every key is
checked against the flag table of the k3s release we target, for the node's command:
``k3s server`` skips unknown keys with a warning, ``k3s agent`` refuses to start, and
either way the mistake is better caught before anything is deployed.
"""

from __future__ import annotations

import json
import re

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s_flags import ALIASES, FLAGS, K3S_VERSION
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import (
    ProfileError,
    ProfileProblem,
    node_interfaces,
    plain,
    require_node,
    server_api_host,
)

K3S_ROLES = ("server", "agent")
DEFAULT_DISABLE = ("traefik", "servicelb")
DEFAULT_TOKEN_FILE = "/etc/rancher/k3s/token"  # noqa: S105 - a path, not a token
DEFAULT_KUBECONFIG_MODE = "0600"
# Secrets belong in 0600 files referenced by *-file keys, never in config.yaml.
SECRET_KEYS = {"token": "token-file", "agent-token": "agent-token-file"}
# The profile owns these; an override would make the node disagree with its network.
PROFILE_KEYS = ("node-ip", "flannel-iface", "advertise-address", "cluster-cidr", "service-cidr", "server", "cluster-init")
_DURATION = re.compile(r"([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+")
_TYPE_NAMES = {
    "string": "a string",
    "bool": "true or false",
    "int": "a whole number",
    "stringslice": "a string or a list of strings",
    "duration": "a duration (like 30s or 5m)",
}


def _type_ok(kind, value):
    if kind == "string":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "stringslice":
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(item, str) for item in value))
    if kind == "duration":
        return isinstance(value, str) and bool(_DURATION.fullmatch(value))
    return False


def check_k3s_config(config, command, source="k3s config"):
    """Raise ProfileError for every key k3s <command> would not take as given."""
    if command not in K3S_ROLES:
        raise ProfileError(source, [ProfileProblem("", f"k3s role {command!r} is not one of: {', '.join(K3S_ROLES)}")])
    problems = []
    for key, value in config.items():
        if not isinstance(key, str):
            problems.append(ProfileProblem(str(key), "is not a flag name"))
            continue
        if key in SECRET_KEYS:
            problems.append(ProfileProblem(key, f"is a secret; put it in a 0600 file and set {SECRET_KEYS[key]}"))
            continue
        if key in ALIASES:
            problems.append(ProfileProblem(key, f"is a short alias; config.yaml takes the long name {ALIASES[key]!r}"))
            continue
        if key == "config":
            problems.append(ProfileProblem(key, "names the config file itself and has no effect inside it"))
            continue
        if key not in FLAGS:
            problems.append(ProfileProblem(key, f"is not a k3s {K3S_VERSION} flag"))
            continue
        kind, commands = FLAGS[key]
        if command not in commands:
            problems.append(ProfileProblem(key, f"is a k3s {commands[0]} flag only; k3s {command} does not take it"))
        elif not _type_ok(kind, value):
            problems.append(ProfileProblem(key, f"must be {_TYPE_NAMES[kind]}, got {value!r}"))
    if problems:
        raise ProfileError(source, problems)


def init_server(profile, servers):
    """The server that initialises the cluster: the one whose cluster address is server_api's host.

    None when server_api points elsewhere (a VIP or an existing cluster): then every
    server joins server_api.
    """
    host = server_api_host(profile)
    for server in servers:
        if str(profile["ip_addresses"].get(server, {}).get("cluster")) == host:
            return server
    return None


def k3s_config(
    profile,
    node,
    role,
    servers=(),
    disable=DEFAULT_DISABLE,
    write_kubeconfig_mode=DEFAULT_KUBECONFIG_MODE,
    token_file=DEFAULT_TOKEN_FILE,
    extra=None,
):
    """The flat config.yaml mapping for one node, checked against the flag table."""
    require_node(profile, node)
    source = f"k3s config of {node}"
    if role not in K3S_ROLES:
        raise ProfileError(source, [ProfileProblem("", f"k3s role {role!r} is not one of: {', '.join(K3S_ROLES)}")])
    address = str(profile["ip_addresses"][node]["cluster"])
    config = {
        "node-name": node,
        "node-ip": address,
        "flannel-iface": node_interfaces(profile, node)["cluster"],
        "token-file": token_file,
    }
    if role == "server":
        host = server_api_host(profile)
        config["advertise-address"] = address
        config["tls-san"] = [host] if host == address else [host, address]
        config["cluster-cidr"] = profile["cluster_cidr"]
        config["service-cidr"] = profile["service_cidr"]
        if disable:
            config["disable"] = list(disable)
        config["write-kubeconfig-mode"] = write_kubeconfig_mode
    if role == "server" and init_server(profile, servers if node in servers else [*servers, node]) == node:
        config["cluster-init"] = True
    else:
        config["server"] = profile["server_api"]

    extra = extra or {}
    if not isinstance(extra, dict):
        raise ProfileError(source, [ProfileProblem("extra", f"must be a mapping of k3s flags, got {extra!r}")])
    owned = [ProfileProblem(key, "comes from the profile; change the profile instead") for key in extra if key in PROFILE_KEYS]
    if owned:
        raise ProfileError(source, owned)
    config.update(plain(extra))
    check_k3s_config(config, role, source)
    return config


def _yaml_scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # A JSON string is a YAML double-quoted scalar: never mistaken for a number or bool.
    return json.dumps(str(value))


def k3s_config_yaml(config, node):
    """config.yaml text: a header, then the flat keys in sorted order (yamllint-clean)."""
    lines = [f"# Generated by n3x.cluster for {node}; changes here are overwritten.", "---"]
    for key, value in sorted(plain(config).items()):
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"  - {_yaml_scalar(item)}" for item in value)
        else:
            lines.append(f"{key}: {_yaml_scalar(value)}")
    return "\n".join(lines) + "\n"


def quorum_warnings(servers):
    """Warnings about the server count with embedded etcd."""
    count = len(servers)
    if count and count % 2 == 0:
        tolerated = (count - 1) // 2
        return [
            f"{count} k3s servers with embedded etcd: quorum is {count // 2 + 1} of {count}, so the cluster "
            f"tolerates the loss of {tolerated} server{'s' if tolerated != 1 else ''}"
            + (" (losing either server stops the API)" if count == 2 else "")
            + f"; {count + 1} servers would tolerate {count // 2}."
        ]
    return []
