"""Each molecule scenario (real QEMU VMs) as one test: one at a time by default (2 cores),
N at once with `scripts/test -j N` (each scenario has its own lab directory and ports).

A scenario that needs something this machine lacks (a k3s binary) is skipped with the
reason, so it shows in the summary; it never passes on a stand-in. The slowest scenarios
run only in the full suite (`scripts/test --full`, or N3X_SLOW_SCENARIOS=1), which keeps
CI near 40 minutes.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.scenarios.harness import results_dir, run_logged

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
# Lower layers first, so the first failure in the summary is the lowest broken layer. Every
# scenario still runs: a broken layer fails its own test and does not stop the others.
SCENARIOS = [
    "l1-vm-boot",
    "l2-two-vm-network",
    "l2-simple",
    "l2-vlans",
    "l2-bonding-vlans",
    "l2-dhcp-simple",
    "bond-failover",
    "vlan-negative",
    "network-constraints",
    "network-takeover",
    "k3s-prepare",
    "swupdate-ab-ota",
    "ota-rollout",
    "jetson-arm64",
    "l3-k3s-service",
    *(f"l4-{profile}-{boot}" for profile in ("simple", "vlans", "bonding-vlans", "dhcp-simple") for boot in ("direct", "uefi")),
    "k3s-storage",
    "k3s-network",
]
# Scenarios that converge with molecule/shared/converge-k3s.yml install a real k3s.
NEEDS_K3S = {s for s in SCENARIOS if s.startswith(("l3-", "l4-")) or s in ("k3s-storage", "k3s-network")}
# Full suite only, with their wall time here (TCG, 2 cores).
SLOW = {
    "jetson-arm64": "about 5 min with the arm64 image cached, 8 min more to build it: arm64 under TCG",
}
# Not run here: `default` renders on the controller only (tests/integration covers it).
NOT_RUN = {"default"}


NO_K3S = (
    "no k3s v1.35.0+k3s3 binary for amd64 is available: set k3s_binary_path=/path/to/k3s, "
    "or k3s_airgap_dir=DIR with k3s, k3s-airgap-images-amd64.tar.zst and sha256sum-amd64.txt, "
    "or allow download of v1.35.0+k3s3 from https://github.com/k3s-io/k3s/releases/download/v1.35.0%2Bk3s3/ with k3s_download=true"
)


def k3s_source():
    """Where a real k3s comes from, or None."""
    binary = os.environ.get("N3X_K3S_BINARY")
    if binary and os.access(binary, os.X_OK):
        return binary
    airgap = os.environ.get("N3X_K3S_AIRGAP_DIR")
    if airgap and os.path.isdir(airgap):
        return airgap
    return None


def present(name):
    return (REPO / "molecule" / name / "molecule.yml").is_file()


def test_every_scenario_is_run_or_named_unrun():
    on_disk = {path.parent.name for path in (REPO / "molecule").glob("*/molecule.yml")}
    assert on_disk - set(SCENARIOS) - NOT_RUN == set()
    assert {s for s in SCENARIOS if not present(s)} == set()


def test_k3s_scenarios_are_exactly_those_that_install_k3s():
    installing = {path.parent.name for path in (REPO / "molecule").glob("*/molecule.yml") if "converge-k3s.yml" in path.read_text()}
    assert installing == NEEDS_K3S


def molecule_env():
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "ANSIBLE_FORCE_COLOR": "0",
        "PY_COLORS": "0",
        # Molecule 26 looks for a collection's scenarios in extensions/molecule/ otherwise.
        "MOLECULE_GLOB": "molecule/*/molecule.yml",
    }


def test_k3s_scenario_without_k3s_fails_before_any_vm_with_cluster_yml_message():
    """`molecule test -s l3-k3s-service` with no k3s: the create step stops before booting."""
    env = {name: value for name, value in molecule_env().items() if not name.startswith(("N3X_K3S_", "K3S_"))}
    lab = pathlib.Path.home() / ".cache/n3x/lab/molecule-l3-k3s-service"
    argv = [str(BIN / "molecule"), "test", "-s", "l3-k3s-service"]
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=600)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert NO_K3S in output
    assert "Bring up the lab VMs" not in output, "the lab role ran"
    assert not list(lab.glob("*.pid")), f"a VM was started in {lab}"


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if present(s)])
def test_scenario(scenario):
    if scenario in NEEDS_K3S and k3s_source() is None:
        pytest.skip("needs a real k3s: set N3X_K3S_BINARY=/path/to/k3s or N3X_K3S_AIRGAP_DIR=DIR (none is reachable from this machine)")
    if scenario in SLOW and os.environ.get("N3X_SLOW_SCENARIOS") != "1":
        pytest.skip(f"slow ({SLOW[scenario]}): run it with scripts/test --full or N3X_SLOW_SCENARIOS=1")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is missing: run scripts/bootstrap (apt package qemu-system-x86)")
    output = results_dir()
    logs = output / "logs" / scenario
    logs.mkdir(parents=True, exist_ok=True)
    (output / "junit" / "molecule").mkdir(parents=True, exist_ok=True)
    env = {
        **molecule_env(),
        # The scenario's testinfra checks write JUnit too (per check and node, with the
        # figures they measure as properties: xunit1 keeps them schema-valid) ...
        "PYTEST_ADDOPTS": f"{os.environ.get('PYTEST_ADDOPTS', '')} --junitxml={output / 'junit' / 'molecule' / f'{scenario}.xml'} "
        f"-o junit_family=xunit1 -o junit_suite_name={scenario}".strip(),
        # ... and molecule/shared/destroy.yml keeps the VMs' serial console logs here.
        "N3X_LAB_LOGS": str(logs),
    }
    timeout = 3600 if scenario in SLOW else 1800
    returncode = run_logged([str(BIN / "molecule"), "test", "-s", scenario], logs / "molecule.log", env, timeout)
    assert returncode == 0, f"molecule test -s {scenario} failed (output above; {logs / 'molecule.log'})"
