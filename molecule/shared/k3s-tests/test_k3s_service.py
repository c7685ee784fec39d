"""L3: k3s is installed from the verified binary and runs as its unit on every node."""

import json
import os

import yaml

UNITS = {"server": "k3s.service", "agent": "k3s-agent.service"}
SERVER_TOKEN = "/etc/rancher/k3s/token"  # noqa: S105 - a path
AGENT_TOKEN = "/etc/rancher/k3s/agent-token"  # noqa: S105 - a path


def role_of(node, servers):
    return "server" if node in servers else "agent"


def test_binary_present_and_versioned(host, k3s_defaults):
    link = host.file("/usr/local/bin/k3s")
    assert link.is_symlink
    assert link.linked_to == f"/usr/local/lib/n3x/k3s-{k3s_defaults['k3s_version']}"
    version = host.run("k3s --version")
    assert version.rc == 0, version.stderr
    assert version.stdout.splitlines()[0].split()[2] == k3s_defaults["k3s_version"]


def test_unit_active_and_enabled_with_installs_environment_files(host, node, servers):
    unit = UNITS[role_of(node, servers)]
    assert host.service(unit.removesuffix(".service")).is_running
    assert host.service(unit.removesuffix(".service")).is_enabled
    text = host.file(f"/etc/systemd/system/{unit}").content_string
    environment = [line for line in text.splitlines() if line.startswith("EnvironmentFile=")]
    assert environment == ["EnvironmentFile=-/etc/default/%N", "EnvironmentFile=-/etc/sysconfig/%N", f"EnvironmentFile=-/etc/systemd/system/{unit}.env"]
    env = host.file(f"/etc/systemd/system/{unit}.env")
    assert (env.mode, env.user) == (0o600, "root")


def test_config_from_the_profile_mode_0600(host, node, profile, servers):
    config = host.file("/etc/rancher/k3s/config.yaml")
    assert config.mode == 0o600
    assert config.user == "root"
    settings = yaml.safe_load(config.content_string)
    assert settings["node-ip"] == profile["ip_addresses"][node]["cluster"]
    if role_of(node, servers) == "server":
        assert (settings["token-file"], settings["agent-token-file"]) == (SERVER_TOKEN, AGENT_TOKEN)
    else:
        assert settings["token-file"] == AGENT_TOKEN
    assert "token" not in settings
    assert "agent-token" not in settings


def test_tokens_scoped_0600_and_never_on_a_command_line(host, node, servers):
    role = role_of(node, servers)
    held = [SERVER_TOKEN, AGENT_TOKEN] if role == "server" else [AGENT_TOKEN]
    if role == "agent":
        assert not host.file(SERVER_TOKEN).exists, "an agent must not hold the server token"
    unit = UNITS[role]
    unit_text = host.file(f"/etc/systemd/system/{unit}").content_string
    journal = host.run(f"journalctl -u {unit} --no-pager").stdout
    for path in held:
        token_file = host.file(path)
        assert (token_file.mode, token_file.user) == (0o600, "root"), path
        token = token_file.content_string.strip()
        assert len(token) >= 32, path
        # grep reads the token from the file, so its own command line does not carry it.
        found = host.run(f"grep -a -l -F -f {path} /proc/[0-9]*/cmdline")
        assert found.stdout.strip() == "", f"{path} is in the command line of {found.stdout}"
        assert token not in unit_text
        assert token not in journal


def test_install_sh_parity_links_and_scripts(host, node, servers):
    for command in ("kubectl", "crictl", "ctr"):
        found = host.run(f"command -v {command}")
        assert found.rc == 0, f"{command} is not on PATH"
        # install.sh links only a command found nowhere else on PATH, to k3s by its plain name.
        if found.stdout.strip() == f"/usr/local/bin/{command}":
            assert host.run(f"readlink /usr/local/bin/{command}").stdout.strip() == "k3s", command
    assert host.file("/usr/local/bin/k3s-killall.sh").mode == 0o755
    uninstall = "k3s-uninstall.sh" if role_of(node, servers) == "server" else "k3s-agent-uninstall.sh"
    assert host.file(f"/usr/local/bin/{uninstall}").mode == 0o755


def test_airgap_images_installed_when_given(host):
    airgap = os.environ.get("N3X_K3S_AIRGAP_DIR")
    # One tarball, in the form the directory holds (.tar.zst, .tar.gz or .tar).
    installed = host.run("ls /var/lib/rancher/k3s/agent/images/").stdout.split()
    tarballs = [name for name in installed if name.startswith("k3s-airgap-images-amd64.tar")]
    if airgap:
        assert len(tarballs) == 1, f"an airgap directory was given: its images must be installed once, found {installed}"
    else:
        assert tarballs == []


def test_server_api_answers_on_6443(host, node, servers, host_of, init_server):
    """A server answers on its own port; an agent's node is asked through the init server."""
    target = host if role_of(node, servers) == "server" else host_of(init_server)
    if role_of(node, servers) == "server":
        assert host.socket("tcp://6443").is_listening
    readyz = target.run("k3s kubectl get --raw '/readyz?verbose'")
    assert readyz.rc == 0, readyz.stderr
    assert "readyz check passed" in readyz.stdout


def test_node_registered_with_its_profile_address(host, node, profile, servers, host_of, init_server):
    # Agents hold no admin kubeconfig: their node is asked through the init server; a server
    # asks itself, and a failing kubectl fails the test either way.
    target = host if role_of(node, servers) == "server" else host_of(init_server)
    result = target.run(f"k3s kubectl get node {node} --output=json")
    assert result.rc == 0, result.stderr
    addresses = {a["type"]: a["address"] for a in json.loads(result.stdout)["status"]["addresses"]}
    assert addresses["InternalIP"] == profile["ip_addresses"][node]["cluster"]
