"""Fixtures of the k3s scenarios: the lab fixtures plus the cluster, asked through the first server.

A scenario's tests/conftest.py star-imports this module (molecule/shared/k3s-tests on sys.path)."""

import json
import pathlib
import sys

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

from lab_fixtures import REPO, expected, host_of, lab_nodes, node, profile

__all__ = ["agents", "expected", "host_of", "k3s_defaults", "kubectl", "kubectl_apply", "lab_nodes", "node", "profile", "servers", "test_image"]


@pytest.fixture(scope="session")
def k3s_defaults():
    return yaml.safe_load((REPO / "roles" / "k3s" / "defaults" / "main.yml").read_text())


@pytest.fixture
def servers(host):
    return host.backend.get_hosts("k3s_servers", ansible_inventory=host.backend.ansible_inventory)


@pytest.fixture
def agents(host):
    return host.backend.get_hosts("k3s_agents", ansible_inventory=host.backend.ansible_inventory)


@pytest.fixture
def kubectl(host_of, servers):
    """kubectl(*args): JSON (or text with raw=True) from `k3s kubectl` on the first server."""

    def run(*args, raw=False):
        result = host_of(servers[0]).run("k3s kubectl " + " ".join(args) + ("" if raw else " --output=json"))
        assert result.rc == 0, result.stderr
        return result.stdout if raw else json.loads(result.stdout)

    return run


@pytest.fixture
def kubectl_apply(host_of, servers):
    """kubectl_apply(manifest): `k3s kubectl apply` of a YAML manifest on the first server."""

    def apply(manifest):
        server = host_of(servers[0])
        result = server.run("k3s kubectl apply --filename=- <<'N3X_EOF'\n" + manifest + "\nN3X_EOF")
        assert result.rc == 0, result.stderr
        return result.stdout

    return apply


@pytest.fixture
def test_image(kubectl):
    """An image every k3s node already holds: the local-path helper (in k3s's airgap images)."""
    config = kubectl("get", "configmap", "local-path-config", "--namespace=kube-system")
    helper = yaml.safe_load(config["data"]["helperPod.yaml"])
    return helper["spec"]["containers"][0]["image"]
