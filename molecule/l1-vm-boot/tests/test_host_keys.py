"""Host keys are checked everywhere but in the lab: the VM, seen from an inventory of the
user's kind (the repository's ansible.cfg, a known_hosts of its own, no override), is
refused until playbooks/enrol-host-keys.yml enrols its key with a confirmed fingerprint."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
BIN = pathlib.Path(sys.executable).parent


@pytest.fixture
def board(host, tmp_path):
    """run(args) of ansible tools against the VM as a real inventory would reach it."""
    name = host.backend.get_hostname()
    variables = host.backend.ansible_runner.get_variables(name)
    known_hosts = tmp_path / "known_hosts"
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n"
        f"    {name}:\n"
        f"      ansible_host: {variables['ansible_host']}\n"
        f"      ansible_port: {variables['ansible_port']}\n"
        f"      ansible_user: {variables['ansible_user']}\n"
        f"      ansible_ssh_private_key_file: {variables['ansible_private_key_file']}\n"
        # The user's ~/.ssh/known_hosts, kept apart from this machine's.
        f"      ansible_ssh_common_args: -o UserKnownHostsFile={known_hosts}\n"
    )
    # Molecule's environment points at its own ansible.cfg (host_key_checking off, for the lab).
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json")

    def run(*args):
        argv = [str(BIN / args[0]), "-i", str(inventory), *args[1:]]
        result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
        return result.returncode, result.stdout + result.stderr

    return {"name": name, "run": run, "known_hosts": known_hosts, "address": f"[{variables['ansible_host']}]:{variables['ansible_port']}"}


def test_an_unknown_host_key_is_refused_until_enrolled(host, board):
    run, known_hosts = board["run"], board["known_hosts"]
    rc, output = run("ansible", board["name"], "-m", "ansible.builtin.ping")
    assert rc != 0
    assert "Host key verification failed" in output, output

    # The fingerprint as the machine's own console shows it.
    console = host.run("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
    assert console.rc == 0, console.stderr
    fingerprint = console.stdout.split()[1]
    assert fingerprint.startswith("SHA256:")

    enrol = ("ansible-playbook", "playbooks/enrol-host-keys.yml", "-e", f"enrol_known_hosts={known_hosts}")
    rc, output = run(*enrol)
    assert rc != 0
    assert f"{board['name']}: not enrolled, no fingerprint confirmed" in output
    assert fingerprint in output  # shown, for the user to compare
    assert not known_hosts.exists()

    rc, output = run(*enrol, "-e", "enrol_confirm_fingerprints=SHA256:not-this-one")
    assert rc != 0
    assert not known_hosts.exists()

    rc, output = run(*enrol, "-e", f"enrol_confirm_fingerprints={fingerprint}")
    assert rc == 0, output
    lines = known_hosts.read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{board['address']} ssh-ed25519 ")

    rc, output = run("ansible", board["name"], "-m", "ansible.builtin.ping")
    assert rc == 0, output
