"""Fixtures of the k3s scenarios: the lab fixtures plus the cluster, asked through the init server.

A scenario's tests/conftest.py star-imports this module (molecule/shared/k3s-tests on sys.path).
The init server is the one the role chose: the server whose cluster address is the host of
the profile's server_api (the same n3x_k3s.init_server), not the first in sort order.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

from lab_fixtures import REPO, expected, host_of, lab_nodes, node, profile

__all__ = [
    "agents",
    "ansible_playbook",
    "expected",
    "host_of",
    "init_server",
    "k3s_defaults",
    "kubectl",
    "kubectl_apply",
    "lab_nodes",
    "node",
    "profile",
    "pytest_collection_modifyitems",
    "servers",
    "test_image",
]


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
def init_server(profile, servers):
    """The server that initialised the cluster (server_api's host); the first server behind a VIP."""
    # lab_fixtures put the checkout's collection on sys.path.
    from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s import init_server as profile_init_server

    return profile_init_server(profile, list(servers)) or servers[0]


@pytest.fixture
def kubectl(host_of, init_server):
    """kubectl(*args): JSON (or text with raw=True) from `k3s kubectl` on the init server; a failure fails the test."""

    def run(*args, raw=False):
        result = host_of(init_server).run("k3s kubectl " + " ".join(args) + ("" if raw else " --output=json"))
        assert result.rc == 0, f"k3s kubectl {' '.join(args)} on {init_server}: {result.stderr}"
        return result.stdout if raw else json.loads(result.stdout)

    return run


@pytest.fixture
def kubectl_apply(host_of, init_server):
    """kubectl_apply(manifest): `k3s kubectl apply` of a YAML manifest on the init server."""

    def apply(manifest):
        server = host_of(init_server)
        result = server.run("k3s kubectl apply --filename=- <<'N3X_EOF'\n" + manifest + "\nN3X_EOF")
        assert result.rc == 0, result.stderr
        return result.stdout

    return apply


@pytest.fixture
def test_image(kubectl, host_of, lab_nodes):
    """An image every k3s node holds: the local-path helper (in k3s's airgap images).

    Without airgap images a node must pull it; one that cannot fails the test at once, with
    the reason, instead of a pod waiting out its timeout in ImagePullBackOff.
    """
    config = kubectl("get", "configmap", "local-path-config", "--namespace=kube-system")
    helper = yaml.safe_load(config["data"]["helperPod.yaml"])
    image = helper["spec"]["containers"][0]["image"]
    for name in lab_nodes:
        node_host = host_of(name)
        if node_host.run(f"k3s crictl inspecti {image}").rc == 0:
            continue
        pulled = node_host.run(f"timeout 180 k3s crictl pull {image}")
        if pulled.rc != 0:
            pytest.fail(
                f"{name} has no {image} and cannot pull it ({(pulled.stderr or pulled.stdout).strip()[-300:]}): "
                "give N3X_K3S_AIRGAP_DIR with k3s-airgap-images-amd64.tar.zst (or .tar.gz or .tar), or registry access to the nodes"
            )
    return image


def k3s_source_vars():
    """The k3s the scenario was given and the VMs' accelerator, as the role's variables
    (converge-k3s.yml passes the same)."""
    found = {
        "k3s_binary_path": os.environ.get("N3X_K3S_BINARY", ""),
        "k3s_binary_checksum": os.environ.get("N3X_K3S_SHA256", ""),
        "k3s_airgap_dir": os.environ.get("N3X_K3S_AIRGAP_DIR", ""),
    }
    lab = pathlib.Path.home() / ".cache/n3x/lab" / f"molecule-{os.environ.get('MOLECULE_SCENARIO_NAME', '')}"
    for state in sorted(lab.glob("*.json")):
        found["k3s_accel"] = json.loads(state.read_text()).get("accel", "")
        break
    return {key: value for key, value in found.items() if value}


@pytest.fixture
def ansible_playbook(host):
    """ansible_playbook(playbook, *args, extra={}): a playbook of this repository run against the
    scenario's inventory from the controller, as a user runs it; returns the CompletedProcess."""
    inventory = host.backend.ansible_inventory
    binary = pathlib.Path(sys.executable).parent / "ansible-playbook"

    def run(playbook, *args, extra=None):
        variables = {"profile": os.environ["N3X_PROFILE"], **k3s_source_vars(), **(extra or {})}
        argv = [str(binary), "-i", str(inventory), str(REPO / "playbooks" / playbook), "-e", json.dumps(variables), *args]
        env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
        return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600, check=False)

    return run


def pytest_collection_modifyitems(items):
    """Day-2 tests change the cluster (nodes leave and come back, the version moves): last."""
    items.sort(key=lambda item: item.module.__name__.endswith("test_k3s_day2"))
