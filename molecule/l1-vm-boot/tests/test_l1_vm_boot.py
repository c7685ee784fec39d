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


def test_boot_to_ssh_is_measured(host, record_property):
    # Guest clock: from the kernel's start to sshd running (the results matrix shows it).
    usec = host.run("systemctl show n3x-sshd.service -p ActiveEnterTimestampMonotonic --value").stdout.strip()
    assert usec.isdigit(), f"n3x-sshd.service has no start time: {usec!r}"
    assert int(usec) > 0, "n3x-sshd.service has not started"
    record_property("boot_to_sshd_seconds", round(int(usec) / 1e6, 2))
    times = host.run("systemd-analyze time").stdout.strip()
    assert times.startswith("Startup finished in"), times
    record_property("systemd_analyze", times.splitlines()[0])
