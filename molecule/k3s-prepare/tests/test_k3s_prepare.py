"""A node prepared for k3s and Longhorn-style storage, without a k3s binary."""

import pytest
import yaml


def test_k3s_kernel_modules_loaded_and_persistent(host):
    loaded = host.run("cut -d' ' -f1 /proc/modules").stdout.split()
    at_boot = host.file("/etc/modules-load.d/n3x-k3s.conf").content_string.splitlines()
    for module in ("br_netfilter", "overlay"):
        assert module in loaded
        assert module in at_boot


@pytest.mark.parametrize(
    ("name", "value"),
    [("net.ipv4.ip_forward", "1"), ("net.bridge.bridge-nf-call-iptables", "1"), ("net.bridge.bridge-nf-call-ip6tables", "1")],
)
def test_k3s_sysctls_live_and_persistent(host, name, value):
    assert host.sysctl(name) == int(value)
    assert f"{name}={value}" in host.file("/etc/sysctl.d/90-n3x-k3s.conf").content_string.replace(" ", "")


def test_swap_is_off(host):
    assert host.run("swapon --show --noheadings").stdout.strip() == ""


def test_k3s_core_packages_installed(host):
    for package in ("iptables", "conntrack", "ipvsadm", "curl", "ca-certificates"):
        assert host.package(package).is_installed, package


UNITS = {"server": "k3s.service", "agent": "k3s-agent.service"}


def role_of(host, node):
    return "server" if node in host.backend.get_hosts("k3s_servers", ansible_inventory=host.backend.ansible_inventory) else "agent"


def test_config_written_with_scoped_tokens_but_no_k3s_installed(host, node, profile):
    """prepared writes config.yaml from the profile and stops before the binary."""
    config = host.file("/etc/rancher/k3s/config.yaml")
    assert config.mode == 0o600
    settings = yaml.safe_load(config.content_string)
    assert settings["node-ip"] == profile["ip_addresses"][node]["cluster"]
    assert settings["flannel-iface"] == "eth1"
    if role_of(host, node) == "server":
        assert (settings["token-file"], settings["agent-token-file"]) == ("/etc/rancher/k3s/token", "/etc/rancher/k3s/agent-token")
    else:
        assert settings["token-file"] == "/etc/rancher/k3s/agent-token"
        assert "agent-token-file" not in settings
    assert not host.file("/usr/local/bin/k3s").exists


def test_memory_passed_the_k3s_preflight(host, node):
    """The scenario gives the server 2 GiB and the agent 1 GiB; the preflight needs 1613 and 275 MiB."""
    kib = int(host.file("/proc/meminfo").content_string.split("MemTotal:")[1].split()[0])
    assert kib // 1024 >= {"server": 1613, "agent": 275}[role_of(host, node)]


def test_scoped_token_files(host, host_of, node, lab_nodes):
    """Servers hold the server and agent tokens, agents the agent token only; all 0600, root."""
    agent_token = host.file("/etc/rancher/k3s/agent-token")
    assert (agent_token.mode, agent_token.user) == (0o600, "root")
    assert len(agent_token.content_string.strip()) == 64
    server_token = host.file("/etc/rancher/k3s/token")
    if role_of(host, node) == "server":
        assert (server_token.mode, server_token.user) == (0o600, "root")
        assert server_token.content_string.strip() != agent_token.content_string.strip()
    else:
        assert not server_token.exists, "an agent must not hold the server token"
    # One agent token for the whole cluster.
    assert {host_of(name).file("/etc/rancher/k3s/agent-token").content_string for name in lab_nodes} == {agent_token.content_string}


def test_unit_installed_disabled_with_installs_environment_files(host, node):
    unit = UNITS[role_of(host, node)]
    text = host.file(f"/etc/systemd/system/{unit}").content_string
    environment = [line for line in text.splitlines() if line.startswith("EnvironmentFile=")]
    assert environment == ["EnvironmentFile=-/etc/default/%N", "EnvironmentFile=-/etc/sysconfig/%N", f"EnvironmentFile=-/etc/systemd/system/{unit}.env"]
    assert f"ExecStart=/usr/local/bin/k3s {role_of(host, node)}" in text
    assert not host.service(unit.removesuffix(".service")).is_enabled
    assert not host.service(unit.removesuffix(".service")).is_running
    other = UNITS["agent" if role_of(host, node) == "server" else "server"]
    assert not host.file(f"/etc/systemd/system/{other}").exists


def test_environment_file_0600_with_the_proxy_and_no_proxy(host, node, profile):
    unit = UNITS[role_of(host, node)]
    env = host.file(f"/etc/systemd/system/{unit}.env")
    assert (env.mode, env.user) == (0o600, "root")
    values = dict(line.split("=", 1) for line in env.content_string.splitlines() if line and not line.startswith("#"))
    assert values["HTTP_PROXY"] == values["HTTPS_PROXY"] == "http://proxy.invalid:3128"
    no_proxy = values["NO_PROXY"].split(",")
    for entry in ("127.0.0.0/8", "localhost", ".svc", ".cluster.local", "192.168.1.0/24", profile["cluster_cidr"], profile["service_cidr"], "registry.lan"):
        assert entry in no_proxy, entry
    # systemd loaded the unit with its three environment files (the missing ones ignored).
    shown = host.run(f"systemctl show {unit} --property=EnvironmentFiles")
    assert f"/etc/systemd/system/{unit}.env (ignore_errors=yes)" in shown.stdout, shown.stdout
    assert "/etc/default/k3s" in shown.stdout, shown.stdout


def test_k3s_scripts_where_install_sh_puts_them(host, node):
    killall = host.file("/usr/local/bin/k3s-killall.sh")
    assert (killall.mode, killall.user) == (0o755, "root")
    uninstall = {"server": "/usr/local/bin/k3s-uninstall.sh", "agent": "/usr/local/bin/k3s-agent-uninstall.sh"}
    role = role_of(host, node)
    assert host.file(uninstall[role]).mode == 0o755
    assert not host.file(uninstall["agent" if role == "server" else "server"]).exists
    assert host.run("sh -n /usr/local/bin/k3s-killall.sh").rc == 0
    assert host.run(f"sh -n {uninstall[role]}").rc == 0
    # The mounts it would take, and those that would stop an uninstall: none (nothing ran).
    for option in ("--list-mounts", "--list-blocking-mounts"):
        listed = host.run(f"/usr/local/bin/k3s-killall.sh {option} /proc/self/mounts")
        assert listed.rc == 0, (option, listed.stderr)
        assert listed.stdout == "", (option, listed.stdout)


def test_storage_kernel_modules_loaded_and_persistent(host):
    loaded = host.run("cut -d' ' -f1 /proc/modules").stdout.split()
    at_boot = host.file("/etc/modules-load.d/n3x-storage.conf").content_string.splitlines()
    for module in ("iscsi_tcp", "dm_crypt"):
        assert module in loaded
        assert module in at_boot


def test_iscsi_initiator_name_set_and_iscsid_running(host):
    content = host.file("/etc/iscsi/initiatorname.iscsi").content_string
    names = [line.split("=", 1)[1] for line in content.splitlines() if line.startswith("InitiatorName=")]
    assert len(names) == 1, content
    assert names[0].startswith("iqn."), content
    assert host.file("/etc/iscsi/initiatorname.iscsi").mode == 0o600
    assert host.service("iscsid").is_running
    assert host.service("iscsid").is_enabled


def test_initiator_names_unique_across_nodes(host, host_of, lab_nodes):
    """Every VM boots from one image: each must still have its own initiator name."""
    names = {}
    for name in lab_nodes:
        content = host_of(name).file("/etc/iscsi/initiatorname.iscsi").content_string
        names[name] = [line for line in content.splitlines() if line.startswith("InitiatorName=")]
    flat = [line for lines in names.values() for line in lines]
    assert len(flat) == len(lab_nodes), names
    assert len(set(flat)) == len(flat), names


def test_longhorn_data_dir(host):
    data = host.file("/var/lib/longhorn")
    assert data.is_directory
    assert data.user == "root"


@pytest.mark.parametrize("command", ["iscsiadm", "mkfs.ext4", "mkfs.xfs", "nsenter", "cryptsetup"])
def test_storage_commands_present(host, command):
    assert host.run(f"PATH=$PATH:/usr/sbin:/sbin command -v {command}").rc == 0


def test_mkfs_xfs_and_ext4_work(host):
    """The tools really make file systems (Longhorn formats volumes with them)."""
    script = (
        "set -e; d=$(mktemp -d); trap 'rm -rf $d' EXIT; "
        "truncate -s 300M $d/x.img; mkfs.xfs -q $d/x.img; blkid -o value -s TYPE $d/x.img; "
        "truncate -s 16M $d/e.img; mkfs.ext4 -q -F $d/e.img; blkid -o value -s TYPE $d/e.img"
    )
    result = host.run(f'PATH=$PATH:/usr/sbin:/sbin sh -c "{script}"')
    assert result.rc == 0, result.stderr
    assert result.stdout.split() == ["xfs", "ext4"]


def test_nsenter_reaches_the_host_mount_namespace(host):
    """Longhorn's instance manager runs iscsiadm in the host through nsenter."""
    result = host.run("nsenter --mount=/proc/1/ns/mnt -- sh -c 'command -v iscsiadm || ls /usr/sbin/iscsiadm'")
    assert result.rc == 0, result.stderr
