"""L1: the lab VM boots Debian 12 with the cloud kernel and is healthy over SSH."""

import os


def test_ssh_works(host):
    cmd = host.run("true")
    assert cmd.rc == 0, cmd.stderr


def test_multi_user_target_reached(host):
    assert host.run("systemctl is-active multi-user.target").stdout.strip() == "active"


def test_system_running_without_failed_units(host):
    state = host.run("systemctl is-system-running --wait").stdout.strip()
    failed = host.run("systemctl list-units --state=failed --no-legend --plain").stdout.strip()
    assert state == "running", failed
    assert failed == ""


def test_cloud_kernel(host):
    release = host.run("uname -r").stdout.strip()
    assert release.endswith("-cloud-amd64"), release


def test_debian_12(host):
    assert host.system_info.distribution == "debian"
    assert host.file("/etc/debian_version").content_string.startswith("12.")


def test_nics_named_by_kernel_order(host):
    # net.ifnames=0: eth0 is management, eth1 the first lab NIC.
    assert host.interface("eth0").exists
    assert host.interface("eth1").exists
    assert "10.0.2.15" in host.interface("eth0").addresses


def test_sshd_listening(host):
    assert host.socket("tcp://0.0.0.0:22").is_listening


def test_boot_mode(host):
    # N3X_LAB_BOOT_MODE=uefi runs the same scenario through OVMF and systemd-boot.
    uefi = os.environ.get("N3X_LAB_BOOT_MODE", "direct") == "uefi"
    assert host.file("/sys/firmware/efi").exists == uefi
