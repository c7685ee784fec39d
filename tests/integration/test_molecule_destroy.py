"""`molecule destroy` of a scenario with no VM up, as a new user's first command may be.

Its destroy sequence runs the scenario's cleanup playbook before destroy.yml; with no VM the
cleanup must leave the nodes alone, and the whole command succeed without touching anything.
No QEMU starts: this runs with the other integration tests, before any scenario (so that no
scenario's run is using the lab it checks). Molecule is in the main venv only: the nox
sessions of other ansible-core minors skip it.
"""

import os
import pathlib
import subprocess
import sys

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
LABS = pathlib.Path.home() / ".cache" / "n3x" / "lab"


def scenarios_with_cleanup():
    found = []
    for path in sorted(REPO.glob("molecule/*/molecule.yml")):
        config = yaml.safe_load(path.read_text()) or {}
        if ((config.get("ansible") or {}).get("playbooks") or {}).get("cleanup"):
            found.append(path.parent.name)
    return found


def test_some_scenario_has_a_cleanup_playbook():
    # Keeps the test below from passing with nothing to run (a renamed key, a moved file).
    assert "network-takeover" in scenarios_with_cleanup()


@pytest.mark.parametrize("scenario", scenarios_with_cleanup())
def test_destroy_with_no_vm_up_succeeds_and_touches_nothing(scenario):
    if not (BIN / "molecule").exists():
        pytest.skip("Molecule is in the main venv only (scripts/test runs this there)")
    lab = LABS / f"molecule-{scenario}"
    if lab.exists():
        pytest.skip(f"{lab} exists: a run of {scenario} may be using it, and destroy would stop its VMs")
    # scripts/molecule: the repo's scenario glob and the venv's tools on PATH, as users run it.
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0"}
    destroy = [str(REPO / "scripts/molecule"), "destroy", "-s", scenario]
    result = subprocess.run(destroy, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Leave a node that has no VM" in output, output[-4000:]
    assert not lab.exists()
