"""Jetson flashing logic: board detection, flash commands, preflight refusals, results.

The BSP trees built here are test data for the preflight checker: empty marker files and
directories. Nothing here runs a flash script, and nothing claims a board was flashed.
"""

import os

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_jetson as j

# Recorded `lsusb` output of a flashing host (an x86 workstation).
LSUSB_NONE = """\
Bus 002 Device 001: ID 1d6b:0003 Linux Foundation 3.0 root hub
Bus 001 Device 003: ID 046d:c52b Logitech, Inc. Unifying Receiver
Bus 001 Device 002: ID 8087:0aaa Intel Corp. Bluetooth 9460/9560 Jefferson Peak (JfP)
Bus 001 Device 001: ID 1d6b:0002 Linux Foundation 2.0 root hub
"""
LSUSB_ORIN_NANO = LSUSB_NONE.replace("Bus 001 Device 001: ID 1d6b:0002", "Bus 001 Device 007: ID 0955:7523 NVIDIA Corp. APX\nBus 001 Device 001: ID 1d6b:0002")
LSUSB_TWO = LSUSB_ORIN_NANO + "Bus 003 Device 012: ID 0955:7523 NVIDIA Corp. APX\n"
# A booted Jetson (USB device mode: RNDIS/ACM gadget), not in recovery mode.
LSUSB_BOOTED = LSUSB_NONE + "Bus 001 Device 009: ID 0955:7020 NVIDIA Corp. L4T (Linux for Tegra) running on Tegra\n"
LSUSB_AGX = LSUSB_NONE + "Bus 001 Device 010: ID 0955:7023 NVIDIA Corp. APX\n"
LSUSB_NX16 = LSUSB_NONE + "Bus 001 Device 011: ID 0955:7323 NVIDIA Corp. APX\n"


def boards_of(text):
    return j.detect_boards(j.parse_lsusb(text))


def test_parse_lsusb_reads_every_device():
    devices = j.parse_lsusb(LSUSB_ORIN_NANO)
    assert len(devices) == 5
    nano = next(d for d in devices if d["vendor"] == "0955")
    assert nano == {"bus": 1, "device": 7, "vendor": "0955", "product": "7523", "description": "NVIDIA Corp. APX", "usb_path": None}


def test_no_board():
    boards, others = boards_of(LSUSB_NONE)
    assert boards == []
    assert others == []
    with pytest.raises(j.JetsonError, match=r"^no Jetson board in recovery mode on flasher: .*0955:7523 Jetson Orin Nano 8GB"):
        j.select_board(boards, "jetson-orin-nano-devkit", host="flasher")


def test_one_orin_nano():
    boards, _others = boards_of(LSUSB_ORIN_NANO)
    assert [(b["usb_id"], b["module"], b["bus"], b["device"]) for b in boards] == [("0955:7523", "Jetson Orin Nano 8GB", 1, 7)]
    assert j.select_board(boards, "jetson-orin-nano-devkit")["usb_id"] == "0955:7523"
    assert j.select_board(boards)["module"] == "Jetson Orin Nano 8GB"


@pytest.mark.parametrize(
    ("pid", "module"),
    [("7323", "Jetson Orin NX 16GB"), ("7423", "Jetson Orin NX 8GB"), ("7523", "Jetson Orin Nano 8GB"), ("7623", "Jetson Orin Nano 4GB")],
)
def test_orin_nx_and_nano_ids_fit_the_orin_nano_devkit_config(pid, module):
    boards, _ = boards_of(f"Bus 001 Device 004: ID 0955:{pid} NVIDIA Corp. APX\n")
    assert boards[0]["module"] == module
    assert j.select_board(boards, "jetson-orin-nano-devkit")["product"] == pid


def test_two_boards_without_a_usb_path_are_refused():
    boards, _ = boards_of(LSUSB_TWO)
    assert len(boards) == 2
    with pytest.raises(j.JetsonError, match=r"2 Jetson boards in recovery mode .* set the USB path"):
        j.select_board(boards, "jetson-orin-nano-devkit")


def test_a_booted_jetson_is_not_a_board_in_recovery_mode():
    boards, others = boards_of(LSUSB_BOOTED)
    assert boards == []
    assert [(d["vendor"], d["product"]) for d in others] == [("0955", "7020")]
    with pytest.raises(j.JetsonError, match=r"not in recovery mode .*: 0955:7020"):
        j.select_board(boards, others=others)


@pytest.mark.parametrize("text", [LSUSB_AGX, LSUSB_NX16.replace("7323", "7023")])
def test_wrong_module_for_the_board_config_is_refused(text):
    boards, _ = boards_of(text)
    with pytest.raises(j.JetsonError, match=r"^wrong module for board config jetson-orin-nano-devkit: found Jetson AGX Orin .*refusing to flash$"):
        j.select_board(boards, "jetson-orin-nano-devkit")


def test_orin_nano_is_refused_for_an_agx_config():
    boards, _ = boards_of(LSUSB_ORIN_NANO)
    with pytest.raises(j.JetsonError, match="wrong module for board config jetson-agx-orin-devkit: found Jetson Orin Nano 8GB"):
        j.select_board(boards, "jetson-agx-orin-devkit")


def make_sysfs(root, devices):
    for name, fields in devices.items():
        entry = root / name
        entry.mkdir(parents=True)
        for key, value in fields.items():
            (entry / key).write_text(value + "\n")
    (root / "usb1").mkdir()  # a root hub: no idVendor of interest, skipped by name
    (root / "1-2:1.0").mkdir()  # an interface, skipped by name


def test_sysfs_gives_usb_paths_and_selects_by_path(tmp_path):
    make_sysfs(
        tmp_path,
        {
            "1-2": {"idVendor": "0955", "idProduct": "7523", "busnum": "1", "devnum": "7", "product": "APX"},
            "3-1.4": {"idVendor": "0955", "idProduct": "7523", "busnum": "3", "devnum": "12", "product": "APX"},
            "1-1": {"idVendor": "046d", "idProduct": "c52b", "busnum": "1", "devnum": "3", "product": "USB Receiver"},
        },
    )
    devices = j.read_sysfs_usb(str(tmp_path))
    assert sorted(d["usb_path"] for d in devices) == ["1-1", "1-2", "3-1.4"]
    boards, _ = j.detect_boards(devices)
    assert j.select_board(boards, "jetson-orin-nano-devkit", usb_path="3-1.4")["device"] == 12
    with pytest.raises(j.JetsonError, match="no Jetson board in recovery mode at USB path 2-9"):
        j.select_board(boards, "jetson-orin-nano-devkit", usb_path="2-9")


def test_no_sysfs_usb_tree_is_none(tmp_path):
    assert j.read_sysfs_usb(str(tmp_path / "absent")) is None


def test_find_boards_result():
    found = j.find_boards(lambda: ([], "none"), "jetson-orin-nano-devkit", host="flasher")
    assert found["failed"]
    assert found["msg"].startswith("no Jetson board in recovery mode on flasher")
    assert "no USB device is visible at all" in found["msg"]
    lenient = j.find_boards(lambda: (j.parse_lsusb(LSUSB_NONE), "lsusb"), required=False)
    assert "failed" not in lenient
    assert lenient["selected"] is None
    ok = j.find_boards(lambda: (j.parse_lsusb(LSUSB_ORIN_NANO), "lsusb"), "jetson-orin-nano-devkit")
    assert ok["selected"]["usb_id"] == "0955:7523"
    assert "failed" not in ok


NVME = [
    "./tools/kernel_flash/l4t_initrd_flash.sh",
    "--external-device",
    "nvme0n1p1",
    "-c",
    "tools/kernel_flash/flash_l4t_t234_nvme.xml",
    "-p",
    "-c bootloader/generic/cfg/flash_t234_qspi.xml",
    "--showlogs",
    "--network",
    "usb0",
    "jetson-orin-nano-devkit",
    "internal",
]


def test_flash_command_nvme():
    assert j.flash_command("jetson-orin-nano-devkit", "nvme") == NVME


def test_flash_command_usb_drive():
    assert j.flash_command("jetson-orin-nano-devkit", "usb") == [*NVME[:2], "sda1", *NVME[3:]]


def test_flash_command_sd_card():
    assert j.flash_command("jetson-orin-nano-devkit", "sd") == ["./flash.sh", "jetson-orin-nano-devkit", "mmcblk0p1"]


def test_flash_command_agx_emmc():
    assert j.flash_command("jetson-agx-orin-devkit", "emmc") == ["./flash.sh", "jetson-agx-orin-devkit", "internal"]


def test_flash_command_super_config_and_usb_instance():
    argv = j.flash_command("jetson-orin-nano-devkit-super", "nvme", usb_instance="3-1.4")
    assert argv == [NVME[0], "--usb-instance", "3-1.4", *NVME[1:10], "jetson-orin-nano-devkit-super", "internal"]
    assert j.flash_command("jetson-orin-nano-devkit", "sd", usb_instance="1-2") == [
        "./flash.sh",
        "--usb-instance",
        "1-2",
        "jetson-orin-nano-devkit",
        "mmcblk0p1",
    ]


@pytest.mark.parametrize(
    ("board", "storage", "instance", "message"),
    [
        ("jetson orin; rm -rf /", "nvme", None, "is not a Linux_for_Tegra config name"),
        ("", "nvme", None, "is not a Linux_for_Tegra config name"),
        ("jetson-orin-nano-devkit", "floppy", None, "storage 'floppy' is not one of: nvme, usb, sd, emmc"),
        ("jetson-orin-nano-devkit", "nvme", "bus1", "is not a sysfs USB path"),
    ],
)
def test_flash_command_refuses_bad_arguments(board, storage, instance, message):
    with pytest.raises(j.JetsonError, match=message):
        j.flash_command(board, storage, instance)


RELEASE_LINE = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"
PLENTY = type("Usage", (), {"free": 100 * j.GIB})()


def make_bsp(root, release=RELEASE_LINE, board="jetson-orin-nano-devkit", executable=True):
    """A Linux_for_Tegra tree with the files the preflight looks at (contents are placeholders)."""
    for directory in ("bootloader", "kernel", "rootfs/etc", "nv_tegra", "tools/kernel_flash"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    for tool in ("flash.sh", j.INITRD_FLASH, j.DEFAULT_USER_SCRIPT):
        path = root / tool
        path.write_text("#!/bin/sh\necho 'test placeholder: not a flash tool' >&2\nexit 1\n")
        path.chmod(0o755 if executable else 0o644)
    (root / f"{board}.conf").write_text("# placeholder\n")
    if release is not None:
        (root / "rootfs/etc/nv_tegra_release").write_text(release)
    return root


def check(bsp, board="jetson-orin-nano-devkit", storage="nvme", release="R36.4", euid=0, usage=PLENTY, min_free_gib=40):
    return j.preflight(str(bsp), board, storage, release, min_free_gib, euid=euid, disk_usage=lambda _path: usage)


def test_preflight_passes_a_complete_bsp(tmp_path):
    bsp = make_bsp(tmp_path / "Linux_for_Tegra")
    assert check(bsp) == []
    assert check(bsp, release="R36.4.3") == []
    assert check(bsp, release="R36.4.x") == []
    assert check(bsp, storage="sd") == []


def test_preflight_refuses_when_not_root(tmp_path):
    bsp = make_bsp(tmp_path / "Linux_for_Tegra")
    assert check(bsp, euid=1000) == ["not root (uid 1000): NVIDIA's flash scripts need root; run with become: true"]


def test_preflight_refuses_a_missing_bsp(tmp_path):
    problems = check(tmp_path / "nowhere")
    assert problems == [f"BSP directory {tmp_path / 'nowhere'} does not exist: extract Jetson_Linux_R36.4_aarch64.tbz2 and give its Linux_for_Tegra directory"]


def test_preflight_refuses_a_directory_that_is_not_a_bsp(tmp_path):
    (tmp_path / "flash.sh").write_text("")
    assert check(tmp_path) == [f"{tmp_path} is not a Linux_for_Tegra tree: missing bootloader, kernel, rootfs, nv_tegra"]


def test_preflight_refuses_a_release_mismatch(tmp_path):
    bsp = make_bsp(tmp_path / "Linux_for_Tegra", release=RELEASE_LINE.replace("R36", "R35").replace("4.3", "6.0"))
    assert check(bsp) == [f"{bsp}/rootfs/etc/nv_tegra_release: BSP release is R35.6.0, expected R36.4"]
    assert check(make_bsp(tmp_path / "other", release=RELEASE_LINE), release="R36.4.0") == [
        f"{tmp_path}/other/rootfs/etc/nv_tegra_release: BSP release is R36.4.3, expected R36.4.0"
    ]


def test_preflight_reads_bsp_version_when_rootfs_is_not_applied(tmp_path):
    bsp = make_bsp(tmp_path / "Linux_for_Tegra", release=None)
    problems = check(bsp)
    assert len(problems) == 1
    assert "cannot read the L4T release" in problems[0]
    assert "apply_binaries.sh" in problems[0]
    (bsp / "nv_tegra/bsp_version").write_text("# R36 (release), REVISION: 4.3\n")
    assert check(bsp) == []


def test_preflight_refuses_missing_and_non_executable_tools(tmp_path):
    bsp = make_bsp(tmp_path / "Linux_for_Tegra", executable=False)
    problems = check(bsp)
    assert problems == [
        f"{bsp}/{j.INITRD_FLASH} is not executable (chmod +x it, or extract the BSP with tar as root)",
        f"{bsp}/{j.DEFAULT_USER_SCRIPT} is not executable (chmod +x it, or extract the BSP with tar as root)",
        f"{bsp}/flash.sh is not executable (chmod +x it, or extract the BSP with tar as root)",
    ]
    os.remove(bsp / j.INITRD_FLASH)
    assert f"{bsp}/{j.INITRD_FLASH} is missing" in check(bsp)


def test_preflight_refuses_an_unknown_board_config(tmp_path):
    bsp = make_bsp(tmp_path / "Linux_for_Tegra")
    assert check(bsp, board="jetson-agx-orin-devkit") == [
        f"{bsp}/jetson-agx-orin-devkit.conf does not exist: board config jetson-agx-orin-devkit is not in this BSP"
    ]


def test_preflight_refuses_too_little_disk(tmp_path):
    bsp = make_bsp(tmp_path / "Linux_for_Tegra")
    small = type("Usage", (), {"free": 12 * j.GIB})()
    assert check(bsp, usage=small) == [f"{bsp}: 12.0 GiB free, flashing needs at least 40 GiB (system images are built there)"]
    assert check(bsp, usage=small, min_free_gib=10) == []


def test_preflight_reports_every_problem_at_once(tmp_path):
    bsp = make_bsp(tmp_path / "Linux_for_Tegra", executable=False)
    small = type("Usage", (), {"free": 1 * j.GIB})()
    problems = check(bsp, euid=1000, usage=small)
    assert problems[0].startswith("not root")
    assert problems[-1].startswith(f"{bsp}: 1.0 GiB free")
    assert len(problems) == 5


def test_release_matching():
    assert j.release_matches("R36.4.3", "R36.4")
    assert j.release_matches("R36.4.3", "r36.4.3")
    assert not j.release_matches("R36.3.0", "R36.4")
    assert not j.release_matches("R36.4", "R36.4.3")


def test_default_user_command_has_no_password():
    argv = j.default_user_command("n3x", "jetson-1")
    assert argv == ["./tools/l4t_create_default_user.sh", "-u", "n3x", "-n", "jetson-1", "--accept-license"]
    assert "-p" not in argv
    assert "--password" not in argv
    with pytest.raises(j.JetsonError, match="not a valid Linux user name"):
        j.default_user_command("root; reboot")


def test_redact_removes_password_lines():
    out = "Creating: username - n3x\nPassword: a8Fj2kQ9\nHostname: jetson-1\n"
    assert "a8Fj2kQ9" not in j.redact(out)
    assert "Hostname: jetson-1" in j.redact(out)


def test_seed_access_installs_keys_and_sudoers(tmp_path):
    bsp = make_bsp(tmp_path / "Linux_for_Tegra")
    (bsp / "rootfs/etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nn3x:x:1000:1000:n3x:/home/n3x:/bin/bash\n")
    owners = []
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly n3x@controller"
    paths = j.seed_access(str(bsp), "n3x", [key, ""], chown=lambda path, uid, gid: owners.append((os.path.basename(path), uid, gid)))
    authorized = bsp / "rootfs/home/n3x/.ssh/authorized_keys"
    assert paths[0] == str(authorized)
    assert authorized.read_text() == key + "\n"
    assert oct(authorized.stat().st_mode & 0o777) == "0o600"
    assert oct((bsp / "rootfs/home/n3x/.ssh").stat().st_mode & 0o777) == "0o700"
    sudoers = bsp / "rootfs/etc/sudoers.d/90-n3x-n3x"
    assert "n3x ALL=(ALL) NOPASSWD:ALL" in sudoers.read_text()
    assert oct(sudoers.stat().st_mode & 0o777) == "0o440"
    assert owners == [(".ssh", 1000, 1000), ("authorized_keys", 1000, 1000)]


def test_seed_access_refusals(tmp_path):
    bsp = make_bsp(tmp_path / "Linux_for_Tegra")
    (bsp / "rootfs/etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(j.JetsonError, match="no SSH public key"):
        j.seed_access(str(bsp), "n3x", [""])
    with pytest.raises(j.JetsonError, match="not an SSH public key"):
        j.seed_access(str(bsp), "n3x", ["-----BEGIN OPENSSH PRIVATE KEY-----"])
    with pytest.raises(j.JetsonError, match="has no user n3x"):
        j.seed_access(str(bsp), "n3x", ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake n3x@controller"])


INITRD_SUCCESS = "Flash is successful\nReboot device\nCleaning up...\nLog is saved to Linux_for_Tegra/initrdlog/flash_1-2_0_20250226-163014.log\n"
FLASH_SH_SUCCESS = (
    "[ 1237.8604 ] MB2 version 01.00.0000\n*** The target generic has been flashed successfully. ***\nReset the board to boot from internal eMMC.\n"
)


def test_flashed_only_with_rc_0_and_the_success_line():
    nvme = j.flash_command("jetson-orin-nano-devkit", "nvme")
    sd = j.flash_command("jetson-orin-nano-devkit", "sd")
    assert j.flash_result(0, INITRD_SUCCESS, nvme)["flashed"] is True
    assert j.flash_result(0, FLASH_SH_SUCCESS, sd)["flashed"] is True


@pytest.mark.parametrize(
    ("rc", "output", "storage", "message"),
    [
        (1, INITRD_SUCCESS, "nvme", "failed with exit code 1; the board is NOT flashed"),
        (0, "Waiting for target to boot-up...\nTimeout\nCleaning up...\n", "nvme", "never printed its success line; the board is NOT known to be flashed"),
        (0, "", "nvme", "never printed its success line"),
        (0, FLASH_SH_SUCCESS, "nvme", "never printed its success line"),  # flash.sh's line does not count for l4t_initrd_flash.sh
        (0, INITRD_SUCCESS, "sd", "never printed its success line"),
        (
            255,
            "Error: probing the target board failed.\n",
            "sd",
            "failed with exit code 255; the board is NOT flashed: Error: probing the target board failed.",
        ),
        (124, INITRD_SUCCESS.replace("Flash is successful", "Flash is not successful"), "nvme", "exit code 124"),
        (0, "echo Flash is successful\n", "nvme", "never printed its success line"),
    ],
)
def test_not_flashed(rc, output, storage, message):
    verdict = j.flash_result(rc, output, j.flash_command("jetson-orin-nano-devkit", storage))
    assert verdict["flashed"] is False
    assert message in verdict["msg"]
