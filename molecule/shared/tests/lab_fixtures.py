"""Fixtures of the lab scenarios' testinfra tests: the profile and the node under test.

A scenario's tests/conftest.py star-imports this module (molecule/shared/tests is on sys.path).
"""

import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import (  # noqa: E402
    load_profile,
    network_roles,
    node_interfaces,
)


@pytest.fixture(scope="session")
def profile():
    name = os.environ.get("N3X_PROFILE")
    if not name:
        pytest.fail("N3X_PROFILE is not set: the scenario's molecule.yml names its profile")
    return load_profile(name, str(REPO / "profiles"))[1]


@pytest.fixture
def node(host):
    return host.backend.get_hostname()


@pytest.fixture
def lab_nodes(host, profile):
    """Inventory nodes of this scenario that the profile describes."""
    names = host.backend.get_hosts("all", ansible_inventory=host.backend.ansible_inventory)
    return [name for name in names if name in profile["ip_addresses"]]


CLUSTER_GROUPS = ("k3s_cluster", "k3s_servers", "k3s_agents")


@pytest.fixture
def expected(host, profile, node):
    """{interface: [address/prefix, ...]} this node must hold, and nothing else.

    Only lab infrastructure (a platform in no k3s group, the DHCP server) is skipped: a
    cluster platform missing from the profile is a name that drifted, and fails.
    """
    if node not in profile["ip_addresses"]:
        groups = [g for g in CLUSTER_GROUPS if node in host.backend.get_hosts(g, ansible_inventory=host.backend.ansible_inventory)]
        if groups:
            pytest.fail(f"{node} is in {', '.join(groups)} but not in the profile's ip_addresses ({', '.join(profile['ip_addresses'])})")
        pytest.skip(f"{node} is lab infrastructure, not a profile node")
    wanted = {}
    names = node_interfaces(profile, node)
    for role in network_roles(profile):
        wanted.setdefault(names[role], []).append(f"{profile['ip_addresses'][node][role]}/{profile['prefix_length']}")
    return wanted


@pytest.fixture
def host_of(host):
    """host_of(name): the testinfra host of another lab node (same connection settings)."""
    import testinfra

    backend = host.backend

    def get(name):
        return testinfra.get_host(f"ansible://{name}", ansible_inventory=backend.ansible_inventory)

    return get
