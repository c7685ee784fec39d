"""L3: k3s is installed from the verified binary and runs as its unit on every node."""

import json

import pytest
import yaml


def role_of(node, servers):
    return "server" if node in servers else "agent"


def test_binary_present_and_versioned(host, k3s_defaults):
    link = host.file("/usr/local/bin/k3s")
    assert link.is_symlink
    assert link.linked_to == f"/usr/local/lib/n3x/k3s-{k3s_defaults['k3s_version']}"
    version = host.run("k3s --version")
    assert version.rc == 0, version.stderr
    assert k3s_defaults["k3s_version"] in version.stdout


def test_unit_active_and_enabled(host, node, servers):
    unit = "k3s" if role_of(node, servers) == "server" else "k3s-agent"
    assert host.service(unit).is_running
    assert host.service(unit).is_enabled


def test_config_from_the_profile_mode_0600(host, node, profile):
    config = host.file("/etc/rancher/k3s/config.yaml")
    assert config.mode == 0o600
    assert config.user == "root"
    settings = yaml.safe_load(config.content_string)
    assert settings["node-ip"] == profile["ip_addresses"][node]["cluster"]
    assert settings["token-file"] == "/etc/rancher/k3s/token"
    assert "token" not in settings


def test_token_file_0600_and_never_on_a_command_line(host, node, servers):
    token_file = host.file("/etc/rancher/k3s/token")
    assert token_file.mode == 0o600
    token = token_file.content_string.strip()
    assert len(token) >= 32
    # grep reads the token from the file, so its own command line does not carry it.
    found = host.run("grep -a -l -F -f /etc/rancher/k3s/token /proc/[0-9]*/cmdline")
    assert found.stdout.strip() == "", f"the token is in the command line of {found.stdout}"
    unit = "k3s" if role_of(node, servers) == "server" else "k3s-agent"
    assert token not in host.file(f"/etc/systemd/system/{unit}.service").content_string
    assert token not in host.run(f"journalctl -u {unit} --no-pager").stdout


def test_server_api_answers_on_6443(host, node, servers):
    if role_of(node, servers) != "server":
        pytest.skip("an agent serves no API")
    assert host.socket("tcp://6443").is_listening
    readyz = host.run("k3s kubectl get --raw '/readyz?verbose'")
    assert readyz.rc == 0, readyz.stderr
    assert "readyz check passed" in readyz.stdout


def test_node_registered_with_its_profile_address(host, node, profile, servers):
    if role_of(node, servers) != "server":
        pytest.skip("an agent holds no admin kubeconfig: L4 asks a server about every node")
    result = host.run(f"k3s kubectl --kubeconfig /etc/rancher/k3s/k3s.yaml get node {node} --output=json")
    assert result.rc == 0, result.stderr
    addresses = {a["type"]: a["address"] for a in json.loads(result.stdout)["status"]["addresses"]}
    assert addresses["InternalIP"] == profile["ip_addresses"][node]["cluster"]
