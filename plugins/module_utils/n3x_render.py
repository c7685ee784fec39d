# Copyright: n3x developers
# MIT License
"""Everything one profile means for an inventory: which nodes, their k3s roles and files."""

from __future__ import annotations

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s import k3s_config, k3s_config_yaml, quorum_warnings
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_networkd import networkd_interfaces, networkd_units
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import (
    ProfileError,
    ProfileProblem,
    kernel_modules,
    node_interfaces,
    physical_interfaces,
)

NETWORKD_DIR = "etc/systemd/network"
K3S_CONFIG_PATH = "etc/rancher/k3s/config.yaml"


def k3s_role(node, servers, agents):
    if node in servers:
        return "server"
    if node in agents:
        return "agent"
    return None


def plan_nodes(profile, servers, agents, inventory_nodes=None):
    """The inventory nodes the profile describes, with their facts, and warnings.

    A node in both k3s groups is an error; an inventory node missing from the profile is
    skipped with a warning (the profile decides the network, so it cannot be guessed).
    """
    servers, agents = list(servers), list(agents)
    both = [node for node in servers if node in agents]
    if both:
        raise ProfileError("inventory", [ProfileProblem("k3s_servers", f"{', '.join(both)} also in k3s_agents; a node is a server or an agent")])
    inventory = list(inventory_nodes) if inventory_nodes is not None else [*servers, *[a for a in agents if a not in servers]]
    warnings = []
    missing = [node for node in inventory if node not in profile["ip_addresses"]]
    if missing:
        warnings.append(f"not in the profile's ip_addresses, skipped: {', '.join(missing)}")
    planned = []
    for node in inventory:
        if node in missing:
            continue
        planned.append(
            {
                "name": node,
                "k3s_role": k3s_role(node, servers, agents),
                "address": str(profile["ip_addresses"][node]["cluster"]),
                "interfaces": node_interfaces(profile, node),
                "networkd_interfaces": networkd_interfaces(profile, node),
                "physical_interfaces": physical_interfaces(profile),
                "mac_address": profile["mac_addresses"].get(node),
                "kernel_modules": kernel_modules(profile),
            }
        )
    warnings.extend(quorum_warnings([node for node in servers if node in profile["ip_addresses"]]))
    return planned, warnings


def node_files(profile, node, role, servers=(), **k3s_options):
    """{path relative to the node's root: text} for the node's networkd units and k3s config."""
    files = {f"{NETWORKD_DIR}/{name}": text for name, text in networkd_units(profile, node).items()}
    if role:
        files[K3S_CONFIG_PATH] = k3s_config_yaml(k3s_config(profile, node, role, servers=servers, **k3s_options), node)
    return files
