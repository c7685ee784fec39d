"""playbooks/jetson.yml on an arm64 Debian VM through the jetson role test double (not a board).

The double (molecule/jetson-arm64/converge.yml) gives the role a device-tree model and
compatible string, an nv_tegra_release and nvpmodel.conf of its own, and stub nvpmodel,
jetson_clocks and nvidia-container-runtime programs that record their calls. These tests prove
the role's Tegra-only plumbing and its idempotence on a real arm64 systemd guest, not a board.
"""

import yaml

CALLS = "/var/lib/n3x-role-test-double/calls"


def test_arm64_guest_with_the_role_test_double(host):
    assert host.system_info.arch == "aarch64"
    assert host.file("/proc/device-tree/model").content_string.rstrip("\0") == "linux,dummy-virt"
    assert host.file("/etc/n3x-role-test-double/model").content_string.rstrip("\0") == "n3x jetson role test double (not a Jetson board)"


def test_network_from_the_profile(host, expected):
    for interface, addresses in expected.items():
        held = host.interface(interface).addresses
        for address in addresses:
            assert address.split("/")[0] in held, (interface, held)


def test_headless_target(host):
    assert host.run("systemctl get-default").stdout.strip() == "multi-user.target"


def test_power_mode_set_by_name_once(host):
    """MAXN_SUPER is id 2 in the double's nvpmodel.conf; the second converge found it set."""
    assert host.file("/var/lib/n3x-role-test-double/nvpmodel-mode").content_string.strip() == "2"
    calls = host.file(CALLS).content_string.splitlines()
    assert [c for c in calls if c.startswith("nvpmodel -m")] == ["nvpmodel -m 2"]
    assert calls.count("nvpmodel -q") >= 2  # converge and idempotence each looked


def test_jetson_clocks_unit_runs_the_tool_at_boot(host):
    unit = host.service("n3x-jetson-clocks.service")
    assert unit.is_enabled
    assert unit.is_running  # a oneshot with RemainAfterExit
    assert "jetson_clocks " in host.file(CALLS).content_string


def test_k3s_config_has_the_gpu_label_and_the_nvidia_runtime(host, node, profile):
    config = host.file("/etc/rancher/k3s/config.yaml")
    assert config.mode == 0o600
    settings = yaml.safe_load(config.content_string)
    assert settings["server"] == profile["server_api"]
    assert settings["node-ip"] == profile["ip_addresses"][node]["cluster"]
    assert settings["flannel-iface"] == "eth1"
    assert sorted(settings["node-label"]) == ["gpu=nvidia", "n3x.io/hardware-model=n3x-jetson-role-test-double-not-a-Jetson-board", "n3x.io/site=lab"]
    assert settings["default-runtime"] == "nvidia"


def test_no_container_toolkit_installed_when_the_runtime_is_there(host):
    assert not host.package("nvidia-container-toolkit").is_installed


def test_k3s_memory_limit_ready_for_the_agent(host):
    dropin = host.file("/etc/systemd/system/k3s-agent.service.d/50-n3x-memory.conf")
    assert "MemoryMax=2G" in dropin.content_string


def test_k3s_itself_not_installed(host):
    """prepared stages the unit (left disabled) but no binary: nothing runs k3s."""
    assert not host.file("/usr/local/bin/k3s").exists
    assert host.file("/etc/systemd/system/k3s-agent.service").exists
    assert not host.service("k3s-agent").is_enabled
    assert not host.service("k3s-agent").is_running


def test_k3s_preflight_applied(host):
    loaded = host.run("cut -d' ' -f1 /proc/modules").stdout.split()
    assert "br_netfilter" in loaded
    assert host.sysctl("net.ipv4.ip_forward") == 1
    assert host.run("swapon --show --noheadings").stdout.strip() == ""


def test_data_disk_formatted_once_with_the_label_and_mounted_by_uuid(host):
    mount = host.mount_point("/var/lib/longhorn")
    assert mount.exists
    assert mount.filesystem == "ext4"
    device = host.run("readlink -f /dev/disk/by-id/virtio-n3x-data").stdout.strip()
    assert mount.device == device
    assert host.run(f"blkid -o value -s LABEL {device}").stdout.strip() == "n3x-longhorn"
    uuid = host.run(f"blkid -o value -s UUID {device}").stdout.strip()
    assert f"UUID={uuid} /var/lib/longhorn ext4" in host.file("/etc/fstab").content_string


def test_no_networkmanager_here_so_nothing_was_written_for_it(host):
    assert not host.file("/usr/sbin/NetworkManager").exists
    assert not host.file("/etc/NetworkManager/conf.d/90-n3x-unmanaged.conf").exists
