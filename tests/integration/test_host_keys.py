"""Host keys are checked on every inventory but the local lab's (no VM here; the
l1-vm-boot scenario enrols a real VM's key with playbooks/enrol-host-keys.yml)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
OVERRIDES = ("StrictHostKeyChecking", "UserKnownHostsFile")


def run(*args, cwd=REPO):
    """(rc, stdout, all output) of an Ansible tool with no ANSIBLE_* setting from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    result = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    return result.returncode, result.stdout, result.stdout + result.stderr


def test_the_repository_configuration_checks_host_keys():
    rc, stdout, output = run("ansible-config", "dump", "--format", "json")
    assert rc == 0, output
    (setting,) = [s for s in json.loads(stdout) if isinstance(s, dict) and s.get("name") == "HOST_KEY_CHECKING"]
    assert setting["value"] is True
    assert setting["origin"] == "default"


@pytest.mark.parametrize("inventory", ["inventories/n100/hosts.yml", "inventories/jetson/hosts.yml", "inventories/lab/hosts.yml"])
def test_shipped_inventories_override_no_host_key_check(inventory):
    rc, stdout, output = run("ansible-inventory", "-i", inventory, "--list")
    assert rc == 0, output
    for option in OVERRIDES:
        assert option not in stdout


def test_only_the_lab_turns_checking_off():
    # Every file that switches checking off, outside the tests that check this.
    pattern = r"StrictHostKeyChecking[ =]+no|host_key_checking *[:=] *(false|False)"
    found = subprocess.run(
        ["git", "-C", str(REPO), "grep", "--untracked", "-l", "-E", pattern, "--", ".", ":!tests", ":!molecule/*/tests"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert sorted(found.stdout.split()) == [
        ".config/molecule/config.yml",  # Molecule, whose platforms are lab VMs
        "roles/lab/tasks/started.yml",  # add_host of the lab VMs
        "roles/lab/templates/inventory.yml.j2",  # the lab's generated inventory
        "roles/lab/templates/ssh_config.j2",  # and ssh_config
    ]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_enrolment_without_an_answer_writes_nothing(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(f"all:\n  hosts:\n    board-1:\n      ansible_host: 127.0.0.1\n      ansible_port: {free_port()}\n")
    known_hosts = tmp_path / "known_hosts"
    enrol = ("ansible-playbook", "-i", str(inventory), "playbooks/enrol-host-keys.yml")
    rc, _stdout, output = run(*enrol, "-e", f"enrol_known_hosts={known_hosts}", "-e", "enrol_scan_timeout=2")
    assert rc != 0
    assert "board-1: no SSH host key from 127.0.0.1 port" in output
    assert "Traceback" not in output
    assert not known_hosts.exists()
