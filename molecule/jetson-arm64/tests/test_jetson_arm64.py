"""A Jetson stand-in (arm64 Debian VM) after playbooks/jetson.yml with k3s prepared."""

import yaml


def test_arm64_guest(host):
    assert host.system_info.arch == "aarch64"
    assert host.file("/proc/device-tree/model").content_string.rstrip("\0") == "linux,dummy-virt"


def test_network_from_the_profile(host, expected):
    for interface, addresses in expected.items():
        held = host.interface(interface).addresses
        for address in addresses:
            assert address.split("/")[0] in held, (interface, held)


def test_headless_target(host):
    assert host.run("systemctl get-default").stdout.strip() == "multi-user.target"


def test_k3s_config_carries_the_labels_without_tegra_settings(host, node, profile):
    config = host.file("/etc/rancher/k3s/config.yaml")
    assert config.mode == 0o600
    settings = yaml.safe_load(config.content_string)
    assert settings["server"] == profile["server_api"]
    assert settings["node-ip"] == profile["ip_addresses"][node]["cluster"]
    assert settings["flannel-iface"] == "eth1"
    assert sorted(settings["node-label"]) == ["n3x.io/hardware-model=linux-dummy-virt", "n3x.io/site=lab"]
    # Tegra only: no gpu label and no NVIDIA default runtime on a board without the GPU.
    assert "default-runtime" not in settings


def test_k3s_memory_limit_ready_for_the_agent(host):
    dropin = host.file("/etc/systemd/system/k3s-agent.service.d/50-n3x-memory.conf")
    assert "MemoryMax=2G" in dropin.content_string


def test_k3s_itself_not_installed(host):
    assert not host.file("/usr/local/bin/k3s").exists
    assert not host.file("/etc/systemd/system/k3s-agent.service").exists


def test_k3s_preflight_applied(host):
    loaded = host.run("cut -d' ' -f1 /proc/modules").stdout.split()
    assert "br_netfilter" in loaded
    assert host.sysctl("net.ipv4.ip_forward") == 1
    assert host.run("swapon --show --noheadings").stdout.strip() == ""


def test_data_disk_formatted_once_and_mounted_by_uuid(host):
    mount = host.mount_point("/var/lib/longhorn")
    assert mount.exists
    assert mount.filesystem == "ext4"
    device = host.run("readlink -f /dev/disk/by-id/virtio-n3x-data").stdout.strip()
    assert mount.device == device
    uuid = host.run(f"blkid -o value -s UUID {device}").stdout.strip()
    assert f"UUID={uuid} /var/lib/longhorn ext4" in host.file("/etc/fstab").content_string


def test_tegra_tools_never_run(host):
    """nvpmodel and jetson_clocks do not exist here; the role skipped them (it would fail otherwise)."""
    assert host.run("command -v nvpmodel").rc != 0
    assert not host.file("/etc/systemd/system/n3x-jetson-clocks.service").exists
