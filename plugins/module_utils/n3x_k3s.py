# Copyright: n3x developers
# MIT License
"""k3s configuration (/etc/rancher/k3s/config.yaml) for one node of a validated profile.

The profile decides the network, the inventory decides who is a server. Every key is
checked against the flag table of the k3s minor release we target, for the node's command:
``k3s server`` skips unknown keys with a warning, ``k3s agent`` refuses to start, and
either way the mistake is better caught before anything is deployed.

Tokens are scoped (docs.k3s.io/cli/token): the server token "essentially has full
administrator access to the cluster", so only servers hold it (``token-file``) together with
the agent token (``agent-token-file``); agents hold only the agent token, in a file of their
own that their ``token-file`` names.
"""

from __future__ import annotations

import json
import re

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_k3s_flags
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
DEFAULT_AGENT_TOKEN_FILE = "/etc/rancher/k3s/agent-token"  # noqa: S105 - a path, not a token
DEFAULT_KUBECONFIG_MODE = "0600"
# Flag tables by k3s minor release (scripts/gen-k3s-flag-table writes one per reference).
FLAG_TABLES = {n3x_k3s_flags.K3S_MINOR: n3x_k3s_flags}
# Secrets with a *-file variant belong in 0600 files that config.yaml names, never in it.
SECRET_KEYS = {"token": "token-file", "agent-token": "agent-token-file", "vpn-auth": "vpn-auth-file"}
# Every flag of the table whose value authenticates: the server and agent tokens and the VPN
# auth (docs.k3s.io/cli/token, cli/server), a datastore URL that carries its password
# (K3S_DATASTORE_ENDPOINT), the S3 credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_SESSION_TOKEN) and an S3 proxy URL that may carry user:password. Those without a
# *-file variant come only from k3s_secret_config, whose tasks never log.
SECRET_FLAGS = (
    "token",
    "agent-token",
    "vpn-auth",
    "datastore-endpoint",
    "etcd-s3-access-key",
    "etcd-s3-secret-key",
    "etcd-s3-session-token",
    "etcd-s3-proxy",
)
_MINOR = re.compile(r"v?([0-9]+)\.([0-9]+)\.[0-9]+.*")
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


def version_minor(version):
    """'1.35' for v1.35.0+k3s3 (None when the text is no k3s version)."""
    found = _MINOR.fullmatch(str(version))
    return f"{int(found.group(1))}.{int(found.group(2))}" if found else None


def flag_table(version=None, allow_other_minor=False):
    """The flag table module for a k3s version's minor release.

    Flags come and go between minors, so a check against another minor's table could pass a
    flag k3s refuses (agent) or ignores (server). Another minor is refused unless
    allow_other_minor, and then the newest table is used and the caller says so.
    """
    if version is None:
        return n3x_k3s_flags
    minor = version_minor(version)
    if minor in FLAG_TABLES:
        return FLAG_TABLES[minor]
    if allow_other_minor:
        return FLAG_TABLES[max(FLAG_TABLES, key=lambda m: tuple(int(p) for p in m.split(".")))]
    tables = ", ".join(f"v{m} ({FLAG_TABLES[m].K3S_VERSION})" for m in sorted(FLAG_TABLES))
    raise ProfileError(
        "k3s_version",
        [
            ProfileProblem(
                "",
                f"{version!r} is minor {minor or 'unknown'}, and n3x has flag tables for {tables} only; "
                "regenerate one with scripts/gen-k3s-flag-table, or set k3s_allow_other_minor=true to check "
                "config.yaml against the newest table anyway",
            )
        ],
    )


def check_k3s_config(config, command, source="k3s config", table=None):
    """Raise ProfileError for every key k3s <command> would not take as given."""
    table = table or n3x_k3s_flags
    FLAGS, ALIASES, K3S_VERSION = table.FLAGS, table.ALIASES, table.K3S_VERSION
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
    agent_token_file=DEFAULT_AGENT_TOKEN_FILE,
    secret=None,
    version=None,
    allow_other_minor=False,
):
    """The flat config.yaml mapping for one node, checked against its minor's flag table.

    extra holds public flags; secret holds the secret-bearing flags without a *-file variant
    (SECRET_FLAGS), which only a no_log path hands over. Servers name the server token
    (token_file) and the agent token (agent_token_file); an agent's token-file is its agent
    token file, so no agent holds the server token.
    """
    require_node(profile, node)
    source = f"k3s config of {node}"
    if role not in K3S_ROLES:
        raise ProfileError(source, [ProfileProblem("", f"k3s role {role!r} is not one of: {', '.join(K3S_ROLES)}")])
    address = str(profile["ip_addresses"][node]["cluster"])
    table = flag_table(version, allow_other_minor)
    config = {
        "node-name": node,
        "node-ip": address,
        "flannel-iface": node_interfaces(profile, node)["cluster"],
        "token-file": token_file if role == "server" else agent_token_file,
    }
    if role == "server":
        config["agent-token-file"] = agent_token_file
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
    secret = secret or {}
    for name, given in (("extra", extra), ("secret", secret)):
        if not isinstance(given, dict):
            raise ProfileError(source, [ProfileProblem(name, f"must be a mapping of k3s flags, got {given!r}")])
    problems = [ProfileProblem(key, "comes from the profile; change the profile instead") for key in extra if key in PROFILE_KEYS]
    problems += [
        ProfileProblem(key, "carries a secret; give it in k3s_secret_config, whose tasks are never logged")
        for key in extra
        if key in SECRET_FLAGS and key not in SECRET_KEYS
    ]
    # Only flag names reach a message here: the values are secret.
    problems += [
        ProfileProblem(f"secret.{key}", "is not a secret-bearing flag; give it in k3s_extra_config")
        for key in secret
        if key not in SECRET_FLAGS or key in SECRET_KEYS
    ]
    problems += [ProfileProblem(f"secret.{key}", "must be a string") for key in secret if key in SECRET_FLAGS and not isinstance(secret[key], str)]
    if problems:
        raise ProfileError(source, problems)
    config.update(plain(extra))
    check_k3s_config(config, role, source, table)
    if secret:
        check_k3s_config(dict.fromkeys(secret, ""), role, source, table)
        config.update(plain(secret))
    return config


def secret_flags_in(config):
    """The secret-bearing flags a config.yaml mapping holds (their names only)."""
    return sorted(key for key in config if key in SECRET_FLAGS)


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
