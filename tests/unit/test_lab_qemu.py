"""QEMU command lines, MACs, ports and lab segments of the lab VMs (pure functions only)."""

import pathlib
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_lab as lab


def direct_vm(tmp_path, nics=("eth1",), mac=None, **kw):
    return lab.vm_definition(
        "server-1",
        str(tmp_path / "lab"),
        "/img/root.img",
        kernel="/img/vmlinuz",
        initrd="/img/initrd-lab.img",
        nics=list(nics),
        mac=mac,
        **kw,
    )


def opt_values(argv, opt):
    return [argv[i + 1] for i, a in enumerate(argv) if a == opt]


def test_direct_boot_command_line(tmp_path):
    vm = direct_vm(tmp_path)
    argv = lab.qemu_argv(vm, 2222, "tcg")
    assert argv[0] == "qemu-system-x86_64"
    assert opt_values(argv, "-kernel") == ["/img/vmlinuz"]
    assert opt_values(argv, "-initrd") == ["/img/initrd-lab.img"]
    append = opt_values(argv, "-append")[0]
    assert "net.ifnames=0" in append.split()
    assert "console=ttyS0" in append.split()
    assert "systemd.hostname=server-1" in append.split()
    assert opt_values(argv, "-accel") == ["tcg,thread=multi,tb-size=256"]
    assert opt_values(argv, "-m") == ["512"]
    assert "-daemonize" in argv
    lab_dir = str(tmp_path / "lab")
    assert opt_values(argv, "-pidfile") == [f"{lab_dir}/server-1.pid"]
    assert opt_values(argv, "-qmp") == [f"unix:{lab_dir}/server-1.qmp,server=on,wait=off"]
    assert opt_values(argv, "-serial") == [f"file:{lab_dir}/server-1.serial.log"]
    assert not any("pflash" in a for a in argv)


def test_management_nic_forwards_ssh_on_loopback_only(tmp_path):
    argv = lab.qemu_argv(direct_vm(tmp_path), 40022, "tcg")
    netdevs = opt_values(argv, "-netdev")
    assert netdevs[0] == "user,id=net-eth0,hostfwd=tcp:127.0.0.1:40022-:22"


def test_uefi_boot_uses_ovmf_and_the_esp(tmp_path):
    code = tmp_path / "OVMF_CODE.fd"
    varst = tmp_path / "OVMF_VARS.fd"
    code.write_bytes(b"x")
    varst.write_bytes(b"y")
    vm = lab.vm_definition(
        "agent-1",
        str(tmp_path / "lab"),
        "/img/root.img",
        esp="/img/esp.img",
        boot_mode="uefi",
        ovmf_code=str(code),
        ovmf_vars=str(varst),
    )
    argv = lab.qemu_argv(vm, 2222, "kvm")
    assert "-kernel" not in argv
    assert "-append" not in argv
    drives = opt_values(argv, "-drive")
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={code}" in drives
    assert any(d.startswith("if=pflash,format=raw,unit=1,file=") and d.endswith("agent-1.vars.fd") for d in drives)
    assert any("id=esp,format=raw" in d and d.endswith("agent-1.esp.img") for d in drives)
    devices = opt_values(argv, "-device")
    assert any("drive=esp" in d and "bootindex=0" in d for d in devices)
    assert opt_values(argv, "-accel") == ["kvm"]
    assert opt_values(argv, "-cpu") == ["host"]


def test_uefi_without_ovmf_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(lab, "OVMF_CODE_CANDIDATES", [str(tmp_path / "missing.fd")])
    with pytest.raises(lab.LabError, match="apt-get install ovmf"):
        lab.vm_definition("s", str(tmp_path), "/r", esp="/e", boot_mode="uefi")


def test_direct_boot_needs_kernel_and_initrd(tmp_path):
    with pytest.raises(lab.LabError, match="kernel and initrd"):
        lab.vm_definition("s", str(tmp_path), "/r", boot_mode="direct")


def test_accel_must_be_resolved_before_the_command_line(tmp_path):
    with pytest.raises(lab.LabError, match="resolved"):
        lab.qemu_argv(direct_vm(tmp_path), 2222, "auto")


def test_bond_members_share_one_segment_in_pci_order(tmp_path):
    vm = direct_vm(tmp_path, nics=["eth2", "eth1"])
    argv = lab.qemu_argv(vm, 2222, "tcg")
    netdevs = opt_values(argv, "-netdev")
    devices = [d for d in opt_values(argv, "-device") if d.startswith("virtio-net-pci")]
    assert [d.split(",id=")[1].split(",")[0] for d in devices] == ["eth0", "eth1", "eth2"]
    slots = [int(d.split("addr=")[1], 16) for d in devices]
    assert slots == sorted(slots)
    mcast = [n.split("mcast=")[1].split(",")[0] for n in netdevs[1:]]
    assert len(mcast) == 2
    assert mcast[0] == mcast[1]
    assert all(n.endswith("localaddr=127.0.0.1") for n in netdevs[1:])


def test_segments_differ_by_name_and_lab(tmp_path):
    a = lab.segment_endpoint(str(tmp_path / "a"), "lab")
    assert a == lab.segment_endpoint(str(tmp_path / "a"), "lab")
    assert a != lab.segment_endpoint(str(tmp_path / "a"), "storage")
    assert a != lab.segment_endpoint(str(tmp_path / "b"), "lab")
    group, port = a
    octets = [int(o) for o in group.split(".")]
    assert octets[0] == 230
    assert 1 <= octets[3] <= 254
    assert 20000 <= port < 32000


def test_explicit_segments_are_separate_hubs(tmp_path):
    vm = direct_vm(tmp_path, nics=[{"name": "eth1", "segment": "a"}, {"name": "eth2", "segment": "b"}])
    netdevs = opt_values(lab.qemu_argv(vm, 2222, "tcg"), "-netdev")
    assert netdevs[1].split("mcast=")[1] != netdevs[2].split("mcast=")[1]


def test_nic_names_must_be_contiguous(tmp_path):
    with pytest.raises(lab.LabError, match="must be"):
        direct_vm(tmp_path, nics=["eth2"])
    with pytest.raises(lab.LabError, match="eth1, eth2"):
        direct_vm(tmp_path, nics=["bond0"])


def test_given_mac_goes_to_the_first_lab_nic(tmp_path):
    vm = direct_vm(tmp_path, nics=["eth1", "eth2"], mac="52:54:00:01:01:01")
    assert vm["nics"][0]["mac"] == "52:54:00:01:01:01"
    assert vm["nics"][1]["mac"] == lab.mac_for("server-1", "eth2")
    argv = lab.qemu_argv(vm, 2222, "tcg")
    assert any("mac=52:54:00:01:01:01" in d for d in opt_values(argv, "-device"))


def test_macs_are_deterministic_unicast_and_distinct():
    mac = lab.mac_for("server-1", "eth1")
    assert mac == lab.mac_for("server-1", "eth1")
    assert mac.startswith("52:54:00:")
    assert mac != lab.mac_for("server-2", "eth1")
    assert mac != lab.mac_for("server-1", "eth2")
    assert lab.normalize_mac(mac) == mac


@pytest.mark.parametrize("bad", ["52:54:00:01:01", "zz:54:00:01:01:01", "01:00:5e:00:00:01"])
def test_bad_macs_are_refused(bad):
    with pytest.raises(lab.LabError):
        lab.normalize_mac(bad)


def test_normalize_mac_accepts_upper_case_and_dashes():
    assert lab.normalize_mac("52-54-00-AB-CD-EF") == "52:54:00:ab:cd:ef"


def test_allocate_macs_covers_every_nic_uniquely():
    layout = {f"node-{i}": ["eth1", "eth2"] for i in range(40)}
    macs = lab.allocate_macs(layout, {"node-3": "52:54:00:01:01:03"})
    assert macs["node-3"]["eth1"] == "52:54:00:01:01:03"
    flat = [m for nics in macs.values() for m in nics.values()]
    assert len(flat) == 40 * 3
    assert len(set(flat)) == len(flat)


def test_allocate_macs_refuses_a_given_duplicate():
    with pytest.raises(lab.LabError, match="also used"):
        lab.allocate_macs({"a": ["eth1"], "b": ["eth1"]}, {"a": "52:54:00:00:00:01", "b": "52:54:00:00:00:01"})


def test_free_port_is_bindable_and_port_free_sees_listeners():
    port = lab.free_port()
    assert lab.port_free(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not lab.port_free(port)
        assert lab.free_port(avoid={port}) != port


def test_segment_ports_stay_below_the_ephemeral_port_range(tmp_path):
    # The kernel gives ports of this range to other programs' sockets (DNS lookups, SSH
    # clients); a segment port one of them holds would make QEMU fail to start.
    low = int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {lab.segment_endpoint(str(tmp_path / f"lab-{i}"), "lab")[1] for i in range(2000)}
    assert max(ports) < low
    assert min(ports) >= 20000
    assert len(ports) > 1500  # spread over the range, not a few values


def test_port_lock_makes_another_lab_wait(tmp_path):
    # Another process (a second lab) holds the lock while its QEMU binds its port.
    path = tmp_path / "ports.lock"
    hold = (
        f"import fcntl, os, time; fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(1.5)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with lab.port_lock(str(path)):
        waited = time.monotonic() - started
    holder.wait(timeout=10)
    assert waited > 0.8, f"got the lock after {waited:.2f} s while another process held it"


def test_port_lock_refuses_a_symlink(tmp_path):
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "ports.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError, match="symbolic links"), lab.port_lock(str(tmp_path / "ports.lock")):
        pass


def test_definition_hash_tracks_the_definition(tmp_path):
    a = direct_vm(tmp_path)
    assert lab.definition_hash(a) == lab.definition_hash(direct_vm(tmp_path))
    assert lab.definition_hash(a) != lab.definition_hash(direct_vm(tmp_path, memory=768))
    assert lab.definition_hash(a) != lab.definition_hash(direct_vm(tmp_path, nics=["eth1", "eth2"]))


def test_memory_is_checked(tmp_path):
    with pytest.raises(lab.LabError, match="MiB"):
        direct_vm(tmp_path, memory=1)


def test_a_pidfile_naming_another_process_is_stale(tmp_path):
    paths = lab.vm_paths(str(tmp_path), "gone")
    # PID 1 exists but is not this VM's QEMU: the pidfile is stale, and says QEMU died at once.
    (tmp_path / "gone.pid").write_text("1\n")
    assert lab.running_pid(paths) is None
    assert lab.ended_uncleanly(paths, {})
    assert not lab.stop(paths)
    assert lab.remove(paths)
    assert not (tmp_path / "gone.pid").exists()


def test_stop_does_not_wait_for_init_to_reap(tmp_path):
    # A daemonized QEMU's parent is init; here the test is the parent and reaps only at the
    # end, so the stopped process stays a zombie the whole time, as under a slow init.
    paths = lab.vm_paths(str(tmp_path), "vm")
    # `-pidfile PIDFILE` on the command line makes it count as this VM's QEMU.
    # It says when it runs: /proc/PID/cmdline is empty while exec is still under way.
    code = "import time; print(flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, "-pidfile", paths["pid"]], stdout=subprocess.PIPE)
    try:
        proc.stdout.readline()
        (tmp_path / "vm.pid").write_text(f"{proc.pid}\n")
        assert lab.running_pid(paths) == proc.pid
        started = time.monotonic()
        assert lab.stop(paths)
        assert time.monotonic() - started < 1
        assert lab.running_pid(paths) is None
    finally:
        proc.kill()
        proc.communicate()


def test_missing_qemu_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(lab.shutil, "which", lambda _name: None)
    with pytest.raises(lab.LabError, match=r"qemu-system-x86 qemu-utils"):
        lab.require_tools([lab.QEMU, "qemu-img"])


def test_vm_nics_reads_the_recorded_command_line(tmp_path):
    argv = lab.qemu_argv(direct_vm(tmp_path, nics=["eth1", "eth2"]), 2222, "tcg")
    assert lab.vm_nics({"argv": argv}) == ["eth0", "eth1", "eth2"]


def test_kvm_probe_result_is_cached_per_host_boot(tmp_path, monkeypatch):
    cache = tmp_path / "probe.json"
    calls = []
    monkeypatch.setattr(lab.os, "access", lambda *_a: True)
    monkeypatch.setattr(lab, "require_tools", lambda _tools: None)
    monkeypatch.setattr(lab, "_kvm_boot", lambda kernel, timeout: calls.append(kernel) or (False, "no banner"))
    assert lab.resolve_accel("auto", "/k", str(cache)) == ("tcg", "no banner")
    accel, reason = lab.resolve_accel("auto", "/k", str(cache))
    assert accel == "tcg"
    assert "cached" in reason
    assert calls == ["/k"]
    with pytest.raises(lab.LabError, match="not usable"):
        lab.resolve_accel("kvm", "/k", str(cache))
    assert lab.resolve_accel("tcg", "/k", str(cache)) == ("tcg", "requested")


def test_disk_boot_lets_ovmf_boot_the_image_disk(tmp_path):
    code = tmp_path / "OVMF_CODE.fd"
    varst = tmp_path / "OVMF_VARS.fd"
    code.write_bytes(b"x")
    varst.write_bytes(b"y")
    vm = lab.vm_definition("edge-1", str(tmp_path / "lab"), "/img/disk.img", boot_mode="disk", ovmf_code=str(code), ovmf_vars=str(varst))
    argv = lab.qemu_argv(vm, 2222, "tcg")
    drives = opt_values(argv, "-drive")
    devices = opt_values(argv, "-device")
    assert "-kernel" not in argv
    assert "-append" not in argv
    assert any(d.startswith("if=pflash") and d.endswith(str(code)) for d in drives)
    assert not any("id=esp" in d for d in drives)
    assert any("drive=root" in d and "bootindex=0" in d for d in devices)
    # An edge board's watchdog, reset on expiry; other boot modes (and their definitions) have none.
    assert "i6300esb,addr=0x7" in devices
    assert opt_values(argv, "-action") == ["watchdog=reset"]
    assert vm["watchdog"] == "i6300esb"
    direct = direct_vm(tmp_path)
    assert "watchdog" not in direct
    assert not any("i6300esb" in d for d in opt_values(lab.qemu_argv(direct, 2222, "tcg"), "-device"))


# --- arm64 guests (the Jetson stand-in) and the data disk


def test_arm64_vm_boots_directly_on_the_virt_machine(tmp_path):
    vm = direct_vm(tmp_path, arch="arm64")
    argv = lab.qemu_argv(vm, 2222, "tcg")
    assert argv[0] == "qemu-system-aarch64"
    assert opt_values(argv, "-machine") == ["virt"]
    assert opt_values(argv, "-cpu") == ["cortex-a72"]
    append = opt_values(argv, "-append")[0].split()
    assert "console=ttyAMA0" in append
    assert "console=ttyS0" not in append


def test_amd64_vm_keeps_q35_and_no_cpu_model_under_tcg(tmp_path):
    argv = lab.qemu_argv(direct_vm(tmp_path), 2222, "tcg")
    assert opt_values(argv, "-machine") == ["q35"]
    assert opt_values(argv, "-cpu") == []


def test_arm64_uefi_and_unknown_arches_are_refused(tmp_path):
    with pytest.raises(lab.LabError, match="boot directly"):
        direct_vm(tmp_path, arch="arm64", boot_mode="uefi", esp="/img/esp.img")
    with pytest.raises(lab.LabError, match="arch must be one of"):
        direct_vm(tmp_path, arch="riscv64")


def test_foreign_guests_run_under_tcg_and_refuse_kvm(tmp_path, monkeypatch):
    monkeypatch.setattr(lab, "HOST_ARCH", "amd64")
    cache = str(tmp_path / "probe.json")
    accel, reason = lab.resolve_accel("auto", "/img/vmlinuz", cache, arch="arm64")
    assert accel == "tcg"
    assert "arm64 guest on an amd64 host" in reason
    with pytest.raises(lab.LabError, match="cannot use KVM"):
        lab.resolve_accel("kvm", "/img/vmlinuz", cache, arch="arm64")


def test_data_disk_is_a_second_virtio_disk_with_a_stable_name(tmp_path):
    vm = direct_vm(tmp_path, data_disk="1G")
    argv = lab.qemu_argv(vm, 2222, "tcg")
    lab_dir = str(tmp_path / "lab")
    assert f"if=none,id=data,format=qcow2,cache=unsafe,discard=unmap,file={lab_dir}/server-1.data.qcow2" in opt_values(argv, "-drive")
    assert "virtio-blk-pci,drive=data,addr=0x6,serial=n3x-data" in opt_values(argv, "-device")
    assert not any("id=data" in d for d in opt_values(lab.qemu_argv(direct_vm(tmp_path), 2222, "tcg"), "-drive"))
    with pytest.raises(lab.LabError, match="data_disk"):
        direct_vm(tmp_path, data_disk="lots")


def test_image_arch_comes_from_the_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text('{"spec": {"arch": "arm64"}}')
    assert lab.image_arch(str(tmp_path)) == "arm64"
    assert lab.image_arch(str(tmp_path / "missing")) == "amd64"


@pytest.mark.parametrize("bad", ["a,b", "a,format=raw", "../x", "a/b", "..", "server-1\n", "Server-1", "", "-a", "a" * 64])
def test_vm_names_are_hostnames(tmp_path, bad):
    message = f"name: {bad!r} is not a lab VM name (a hostname: lower-case letters, digits and '-', like server-1)"
    with pytest.raises(lab.LabError) as caught:
        lab.vm_paths(str(tmp_path), bad)
    assert str(caught.value) == message
    with pytest.raises(lab.LabError, match="is not a lab VM name"):
        lab.vm_definition(bad, str(tmp_path), "/img/root.img", kernel="/k", initrd="/i")


def test_commas_in_paths_are_escaped_in_qemu_options(tmp_path):
    lab_dir = tmp_path / "a,format=raw,b"
    vm = direct_vm(lab_dir, data_disk="1G")
    argv = lab.qemu_argv(vm, 2222, "tcg")
    escaped = str(lab_dir / "lab").replace(",", ",,")
    drives = opt_values(argv, "-drive")
    assert drives[0] == f"if=none,id=root,format=qcow2,cache=unsafe,discard=unmap,file={escaped}/server-1.qcow2"
    assert drives[1] == f"if=none,id=data,format=qcow2,cache=unsafe,discard=unmap,file={escaped}/server-1.data.qcow2"
    assert opt_values(argv, "-qmp") == [f"unix:{escaped}/server-1.qmp,server=on,wait=off"]
    # -serial file: and -pidfile take the path as it is (QEMU does not split them at commas).
    assert opt_values(argv, "-serial") == [f"file:{lab_dir}/lab/server-1.serial.log"]
    assert opt_values(argv, "-pidfile") == [f"{lab_dir}/lab/server-1.pid"]
