"""The main job as a new user runs it: scripts/lab-up PROFILE, then scripts/lab-down, which
must leave no QEMU process and no lab directory behind. Each profile gets a lab of its own.

The CI pipelines run every shipped profile (one job each, `scripts/test --lab PROFILE`);
scripts/test here runs dhcp-simple only (N3X_LAB_PROFILES=all, or a comma list, for more):
its lab adds the DHCP server VM that the other profiles do not need.
"""

import os
import pathlib
import shutil
import subprocess

import pytest

from tests.scenarios.harness import REPO, results_dir, run_logged

PROFILES = sorted(path.stem for path in (REPO / "profiles").glob("*.yml"))
LOCAL = ["dhcp-simple"]


def wanted():
    chosen = os.environ.get("N3X_LAB_PROFILES") or ",".join(LOCAL)
    return set(PROFILES) if chosen == "all" else set(chosen.split(","))


def qemu_of(lab_dir):
    """PIDs of QEMU processes whose command line names the lab directory."""
    found = subprocess.run(["pgrep", "-f", f"qemu-system.*{lab_dir}/"], capture_output=True, text=True, check=False).stdout
    return found.split()


@pytest.mark.parametrize("profile", PROFILES)
def test_lab_up_and_down(profile):
    if profile not in wanted():
        pytest.skip(f"CI runs lab-up with every profile (scripts/test --lab {profile}); here only {', '.join(LOCAL)} (N3X_LAB_PROFILES=all for all)")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is missing: run scripts/bootstrap (apt package qemu-system-x86)")
    lab_dir = pathlib.Path.home() / ".cache" / "n3x" / "lab" / f"lab-up-{profile}"
    logs = results_dir() / "logs" / f"lab-{profile}"
    env = {**os.environ, "N3X_LAB_DIR": str(lab_dir), "ANSIBLE_FORCE_COLOR": "0"}
    try:
        up = run_logged(["scripts/lab-up", profile], logs / "lab-up.log", env, timeout=1800)
    finally:
        # The serial consoles outlive the VMs in the logs (CI uploads them on failure).
        for serial in lab_dir.glob("*.serial.log"):
            shutil.copy(serial, logs / serial.name)
        down = run_logged(["scripts/lab-down"], logs / "lab-down.log", env, timeout=600)
    assert up == 0, f"scripts/lab-up {profile} failed (output above; {logs / 'lab-up.log'})"
    assert down == 0, f"scripts/lab-down failed (output above; {logs / 'lab-down.log'})"
    assert not lab_dir.exists(), f"lab-down left {sorted(p.name for p in lab_dir.iterdir())} in {lab_dir}"
    assert qemu_of(lab_dir) == [], f"lab-down left QEMU processes of {lab_dir}"
