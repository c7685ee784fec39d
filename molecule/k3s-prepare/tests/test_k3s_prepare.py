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


def test_config_written_but_no_k3s_installed(host, node, profile):
    """prepared writes config.yaml from the profile and stops before the binary and the unit."""
    config = host.file("/etc/rancher/k3s/config.yaml")
    assert config.mode == 0o600
    settings = yaml.safe_load(config.content_string)
    assert settings["node-ip"] == profile["ip_addresses"][node]["cluster"]
    assert settings["flannel-iface"] == "eth1"
    assert not host.file("/usr/local/bin/k3s").exists
    assert not host.file("/etc/systemd/system/k3s.service").exists
    assert not host.file("/etc/systemd/system/k3s-agent.service").exists
    assert not host.file("/etc/rancher/k3s/token").exists


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
