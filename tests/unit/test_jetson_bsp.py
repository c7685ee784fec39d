"""The BSP tree as NVIDIA's R36 scripts read it: release, module family, the flash table, layouts, host.

Every row of the flash table and every refusal has a test, against the small Linux_for_Tegra tree
of l4t_tree.py (real file names, source chains, release lines and XML paths).
"""

import os
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_jetson_bsp as b

from .l4t_tree import NVME_LAYOUT, RELEASE_LINE, make_bsp

INITRD = "./tools/kernel_flash/l4t_initrd_flash.sh"
QSPI = ["-p", "-c bootloader/generic/cfg/flash_t234_qspi.xml"]


@pytest.fixture
def bsp(tmp_path):
    return make_bsp(tmp_path / "Linux_for_Tegra")


def plan(bsp, board="jetson-orin-nano-devkit", storage="nvme", release="R36.4", **kwargs):
    return b.plan(str(bsp), board, storage, release, **kwargs)


# --- the table: one test per row -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("board", "storage", "argv"),
    [
        (
            "jetson-orin-nano-devkit",
            "nvme",
            [
                INITRD,
                "--external-device",
                "nvme0n1p1",
                "-c",
                b.T234_NVME_LAYOUT,
                *QSPI,
                "--showlogs",
                "--network",
                "usb0",
                "jetson-orin-nano-devkit",
                "internal",
            ],
        ),
        (
            "jetson-orin-nano-devkit",
            "usb",
            [INITRD, "--external-device", "sda1", "-c", b.T234_NVME_LAYOUT, *QSPI, "--showlogs", "--network", "usb0", "jetson-orin-nano-devkit", "internal"],
        ),
        (
            "jetson-orin-nano-devkit-super",
            "sd",
            [
                INITRD,
                "--external-device",
                "mmcblk0p1",
                "-c",
                b.T234_NVME_LAYOUT,
                *QSPI,
                "--showlogs",
                "--network",
                "usb0",
                "jetson-orin-nano-devkit-super",
                "internal",
            ],
        ),
        ("jetson-agx-orin-devkit", "emmc", ["./flash.sh", "jetson-agx-orin-devkit", "internal"]),
        (
            "jetson-agx-orin-devkit",
            "nvme",
            [INITRD, "--external-device", "nvme0n1p1", "-c", b.T234_NVME_LAYOUT, "--showlogs", "--network", "usb0", "jetson-agx-orin-devkit", "external"],
        ),
        (
            "jetson-agx-orin-devkit-maxn",
            "usb",
            [INITRD, "--external-device", "sda1", "-c", b.T234_NVME_LAYOUT, "--showlogs", "--network", "usb0", "jetson-agx-orin-devkit-maxn", "external"],
        ),
        (
            "jetson-agx-orin-devkit",
            "sd",
            [INITRD, "--external-device", "mmcblk0p1", "-c", b.T234_NVME_LAYOUT, "--showlogs", "--network", "usb0", "jetson-agx-orin-devkit", "external"],
        ),
    ],
)
def test_flash_table_rows(bsp, board, storage, argv):
    found = plan(bsp, board, storage)
    assert found.argv == argv
    assert found.problems == []
    assert found.release == "R36.4.3"
    assert (found.family.name, storage) in b.FLASH_TABLE
    assert len(b.FLASH_TABLE) == 7  # every other (family, storage) pair is refused below


def test_orin_nano_has_no_emmc(bsp):
    with pytest.raises(b.BspError, match=r"^Jetson Orin NX/Nano modules have no eMMC: .*flashes to: nvme, usb, sd$"):
        plan(bsp, storage="emmc")


def test_unknown_storage_is_refused(bsp):
    with pytest.raises(b.BspError, match=r"storage 'floppy' is not one of: nvme, usb, sd, emmc"):
        plan(bsp, storage="floppy")


def test_usb_instance_and_size_go_where_the_script_reads_them():
    row = b.FLASH_TABLE[("p3767", "nvme")]
    argv = b.flash_command(row, "jetson-orin-nano-devkit", usb_instance="3-1.4", layout=b.LONGHORN_LAYOUT, app_size="64GiB")
    assert argv[:3] == [INITRD, "--usb-instance", "3-1.4"]
    assert argv[argv.index("-c") + 1] == b.LONGHORN_LAYOUT
    assert argv[argv.index("-S") + 1] == "64GiB"
    assert b.flash_command(b.FLASH_TABLE[("p3701", "emmc")], "jetson-agx-orin-devkit", usb_instance="1-2") == [
        "./flash.sh",
        "--usb-instance",
        "1-2",
        "jetson-agx-orin-devkit",
        "internal",
    ]


def test_massflash_commands_follow_the_two_step_flow():
    row = b.FLASH_TABLE[("p3767", "nvme")]
    images = b.flash_command(row, "jetson-orin-nano-devkit", massflash=3, phase="no-flash")
    assert images[:4] == [INITRD, "--no-flash", "--massflash", "3"]
    assert "--showlogs" not in images  # with --massflash it opens a gnome-terminal per board
    assert images[-3:] == ["usb0", "jetson-orin-nano-devkit", "internal"]
    with pytest.raises(b.BspError, match="massflash runs as --no-flash then --flash-only"):
        b.flash_command(row, "jetson-orin-nano-devkit", usb_instance="1-2", massflash=3, phase="no-flash")
    with pytest.raises(b.BspError, match=r"flash\.sh .* no massflash"):
        b.flash_command(b.FLASH_TABLE[("p3701", "emmc")], "jetson-agx-orin-devkit", massflash=2, phase="no-flash")


@pytest.mark.parametrize("bad", ["bus1", "1-2; reboot", "1-", "../1-2", "1-2\n"])
def test_bad_usb_paths_are_refused(bad):
    with pytest.raises(b.BspError, match="is not a sysfs USB path"):
        b.flash_command(b.FLASH_TABLE[("p3767", "nvme")], "jetson-orin-nano-devkit", usb_instance=bad)


# --- the module family comes from the board config's source chain ---------------------------------


@pytest.mark.parametrize(
    ("board", "family", "chain"),
    [
        ("jetson-orin-nano-devkit", "p3767", ["jetson-orin-nano-devkit.conf", "p3767.conf.common"]),
        ("p3768-0000-p3767-0000-a0", "p3767", ["p3768-0000-p3767-0000-a0.conf", "p3767.conf.common"]),
        ("p3509-a02-p3767-0000", "p3767", ["p3509-a02-p3767-0000.conf", "p3768-0000-p3767-0000-a0.conf", "p3767.conf.common"]),
        ("jetson-orin-nano-devkit-nvme", "p3767", ["jetson-orin-nano-devkit-nvme.conf", "p3768-0000-p3767-0000-a0.conf", "p3767.conf.common"]),
        ("jetson-agx-orin-devkit", "p3701", ["jetson-agx-orin-devkit.conf", "p3737-0000-p3701-0000.conf.common", "p3701.conf.common"]),
        (
            "jetson-agx-orin-devkit-maxn",
            "p3701",
            ["jetson-agx-orin-devkit-maxn.conf", "p3737-0000-p3701-0000.conf", "p3737-0000-p3701-0000.conf.common", "p3701.conf.common"],
        ),
    ],
)
def test_family_from_the_source_chain(bsp, board, family, chain):
    assert b.config_chain(str(bsp), board) == chain
    assert b.module_family(str(bsp), board).name == family


def test_a_config_sourcing_neither_common_file_is_refused(bsp):
    with pytest.raises(b.BspError, match=r"jetson-agx-xavier-devkit.conf sources nothing: neither p3767.conf.common nor p3701.conf.common"):
        b.module_family(str(bsp), "jetson-agx-xavier-devkit")


def test_a_missing_config_is_refused_where_a_hand_list_accepted_it(bsp):
    with pytest.raises(b.BspError, match=r"jetson-orin-nano-devkit-64gb.conf does not exist: board config jetson-orin-nano-devkit-64gb is not in this BSP"):
        b.module_family(str(bsp), "jetson-orin-nano-devkit-64gb")


def test_a_missing_parent_and_a_loop_are_refused(bsp):
    (bsp / "broken.conf").write_text('source "${LDK_DIR}/gone.conf.common";\n')
    with pytest.raises(b.BspError, match=r"gone.conf.common does not exist, but broken.conf sources it"):
        b.module_family(str(bsp), "broken")
    (bsp / "loop-a.conf").write_text('source "${LDK_DIR}/loop-b.conf";\n')
    (bsp / "loop-b.conf").write_text('source "${LDK_DIR}/loop-a.conf";\n')
    with pytest.raises(b.BspError, match="sources itself in a loop"):
        b.module_family(str(bsp), "loop-a")


def test_a_config_pointing_outside_the_bsp_is_not_read(bsp, tmp_path):
    (tmp_path / "outside.conf").write_text('source "${LDK_DIR}/p3767.conf.common";\n')
    os.symlink(tmp_path / "outside.conf", bsp / "escape.conf")
    with pytest.raises(b.BspError, match="points outside"):
        b.module_family(str(bsp), "escape")


def test_a_fifo_config_is_refused_without_blocking(bsp):
    os.mkfifo(bsp / "fifo.conf")
    with pytest.raises(b.BspError, match="is not a regular file"):
        b.module_family(str(bsp), "fifo")


@pytest.mark.parametrize("name", ["../etc/passwd", "a\nb", "", "x" * 65, "-rf", "a b", None])
def test_hostile_config_names_are_refused(bsp, name):
    with pytest.raises(b.BspError, match="is not a Linux_for_Tegra config name"):
        b.module_family(str(bsp), name)


# --- the release ------------------------------------------------------------------------------------


def test_release_from_nv_tegra_release(bsp):
    assert b.bsp_release(str(bsp)) == "R36.4.3"
    assert plan(bsp, release="R36.4.3").release == "R36.4.3"
    assert plan(bsp, release="R36.4.x").release == "R36.4.3"


def test_rootfs_release_must_match_proving_apply_binaries_ran(tmp_path):
    other = RELEASE_LINE.replace("REVISION: 4.3", "REVISION: 3.0")
    bsp = make_bsp(tmp_path / "Linux_for_Tegra", rootfs_release=other)
    with pytest.raises(b.BspError, match=r"rootfs/etc/nv_tegra_release says R36.3.0 but .*nv_tegra/nv_tegra_release says R36.4.3: run apply_binaries.sh"):
        plan(bsp)


def test_no_rootfs_release_means_apply_binaries_never_ran(tmp_path):
    bsp = make_bsp(tmp_path / "Linux_for_Tegra", rootfs_release=False)
    with pytest.raises(b.BspError, match=r"rootfs/etc/nv_tegra_release does not exist: apply_binaries.sh has not run"):
        plan(bsp)


def test_r35_has_no_table(tmp_path):
    bsp = make_bsp(tmp_path / "Linux_for_Tegra", release=RELEASE_LINE.replace("R36", "R35").replace("4.3", "6.0"))
    with pytest.raises(b.BspError, match=r"R35.6.0: n3x has a flash table for R36 only \(R35 uses tools/kernel_flash/flash_l4t_external.xml"):
        plan(bsp, release="R35")


def test_release_mismatch_and_garbage(bsp):
    with pytest.raises(b.BspError, match=r"BSP release is R36.4.3, expected R36.4.0"):
        plan(bsp, release="R36.4.0")
    (bsp / "nv_tegra/nv_tegra_release").write_text("R36 4.3\n")
    with pytest.raises(b.BspError, match=r"first line 'R36 4.3' is not '# R<major> \(release\), REVISION: <x>.<y>, ...'"):
        plan(bsp)


def test_release_matching():
    assert b.release_matches("R36.4.3", "R36.4")
    assert b.release_matches("R36.4.3", "r36.4.3")
    assert not b.release_matches("R36.3.0", "R36.4")
    assert not b.release_matches("R36.4", "R36.4.3")
    assert not b.release_matches("R36.4.3", "")


# --- the files the command names --------------------------------------------------------------------


def test_every_file_the_command_names_must_exist(bsp):
    os.remove(bsp / "bootloader/generic/cfg/flash_t234_qspi.xml")
    assert plan(bsp).problems == [f"{bsp}/bootloader/generic/cfg/flash_t234_qspi.xml is missing: the command names it"]
    assert plan(bsp, "jetson-agx-orin-devkit", "nvme").problems == []  # AGX Orin's command names no QSPI layout
    os.remove(bsp / "tools/kernel_flash/flash_l4t_t234_nvme.xml")
    assert f"{bsp}/tools/kernel_flash/flash_l4t_t234_nvme.xml is missing: the command names it" in plan(bsp).problems
    (bsp / "tools/kernel_flash/l4t_initrd_flash.sh").chmod(0o644)
    assert f"{bsp}/tools/kernel_flash/l4t_initrd_flash.sh is not executable (extract the BSP with tar -xp as root)" in plan(bsp).problems


def test_not_a_bsp(tmp_path):
    with pytest.raises(b.BspError, match="does not exist"):
        plan(tmp_path / "nowhere")
    (tmp_path / "flash.sh").write_text("")
    with pytest.raises(b.BspError, match="is not a Linux_for_Tegra tree: missing bootloader, kernel, rootfs, nv_tegra"):
        plan(tmp_path)


def test_whether_the_script_skips_other_boards(tmp_path):
    assert b.honours_usb_instance(str(make_bsp(tmp_path / "a/Linux_for_Tegra")))
    assert not b.honours_usb_instance(str(make_bsp(tmp_path / "b/Linux_for_Tegra", honours_usb_instance=False)))


# --- the Longhorn data partition layout ---------------------------------------------------------------


def test_longhorn_layout_fixes_app_and_adds_the_partition():
    text = b.longhorn_layout(NVME_LAYOUT, "flash_l4t_t234_nvme.xml")
    assert text.startswith("<!-- Generated by n3x.cluster (jetson_flash) from flash_l4t_t234_nvme.xml")
    device = ET.fromstring(text.split("\n", 1)[1]).find("device")  # noqa: S314 - the test's own XML
    parts = device.findall("partition")
    names = [p.get("name") for p in parts]
    assert names[-3:] == ["APP", "longhorn", "secondary_gpt"]
    app, longhorn = parts[-3], parts[-2]
    assert app.find("size").text.strip() == "APPSIZE"  # l4t_initrd_flash.sh -S sets it
    assert app.find("allocation_attribute").text.strip() == "8"  # no longer grows
    assert app.find("filename").text.strip() == "APPFILE"
    assert app.get("id") == "1"  # still nvme0n1p1, the root= of the stock command line
    assert app.find("unique_guid").text.strip() == "APPUUID"
    assert longhorn.get("type") == "data"
    assert longhorn.get("id") is None  # like most of NVIDIA's partitions; the board finds it by its label
    assert longhorn.find("allocation_attribute").text.strip() == "0x808"  # takes the rest
    original = ET.fromstring(NVME_LAYOUT).find("device").findall("partition")  # noqa: S314 - the test's own XML
    assert names[:-3] == [p.get("name") for p in original][:-2]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (NVME_LAYOUT.replace(">APP<", ">APP<").replace('name="APP"', 'name="ROOT"'), "no APP partition"),
        (NVME_LAYOUT.replace("0x808", "8"), "APP is not the growing 0x808 partition"),
        (NVME_LAYOUT.replace('name="UDA"', 'name="longhorn"'), "already has a partition named longhorn"),
        (NVME_LAYOUT.replace('type="external"', 'type="sdmmc_user"'), 'expected one <device type="external">'),
        ("<partition_layout", "not a partition layout XML"),
    ],
)
def test_longhorn_layout_refusals(layout, message):
    with pytest.raises(b.BspError, match=message):
        b.longhorn_layout(layout, "x.xml")


def test_data_partition_needs_an_initrd_row_and_a_size(bsp):
    found = plan(bsp, data_partition=True, app_size="64GiB")
    assert found.argv[found.argv.index("-c") + 1] == b.LONGHORN_LAYOUT
    with pytest.raises(b.BspError, match="needs a fixed APP"):
        plan(bsp, data_partition=True)
    with pytest.raises(b.BspError, match=r"flashed with flash\.sh"):
        plan(bsp, "jetson-agx-orin-devkit", "emmc", data_partition=True, app_size="64GiB")
    with pytest.raises(b.BspError, match="is not a size such as 64GiB"):
        plan(bsp, data_partition=True, app_size="64 GB; rm")


# --- the flashing host ----------------------------------------------------------------------------------


def everything(_tool):
    return "/usr/bin/x"


def test_host_preflight_passes_a_prepared_x86_host():
    row = b.FLASH_TABLE[("p3767", "nvme")]
    assert b.host_problems(row, "x86_64", everything, exists=lambda _p: True, binfmt=lambda _name: True) == []


def test_host_preflight_needs_the_arm64_binfmt_entry_for_the_default_user_chroot(tmp_path):
    """tools/l4t_create_default_user.sh (R36.2) runs `chroot . groupadd` and `chroot . useradd` in
    the arm64 rootfs; tools/l4t_flash_prerequisites.sh installs binfmt-support and qemu-user-static."""
    row = b.FLASH_TABLE[("p3767", "nvme")]
    (tmp_path / "qemu-aarch64").write_text("disabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    (tmp_path / "qemu-arm").write_text("enabled\n")
    problems = b.host_problems(row, "x86_64", everything, exists=lambda _p: True, binfmt=lambda name: b.binfmt_enabled(name, str(tmp_path)))
    assert problems == [
        "binfmt_misc has no enabled qemu-aarch64 entry: l4t_create_default_user.sh runs useradd in a chroot of the arm64 rootfs, "
        "which needs it (packages binfmt-support and qemu-user-static; then update-binfmts --enable)"
    ]
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    assert b.host_problems(row, "x86_64", everything, exists=lambda _p: True, binfmt=lambda name: b.binfmt_enabled(name, str(tmp_path))) == []


def test_host_preflight_refuses_arm_and_names_missing_tools_with_their_packages():
    row = b.FLASH_TABLE[("p3767", "nvme")]
    problems = b.host_problems(
        row, "aarch64", lambda tool: None if tool in ("sshpass", "exportfs", "abootimg") else "/x", exists=lambda _p: False, binfmt=lambda _n: True
    )
    assert problems[0].startswith("this host is aarch64: NVIDIA's flash tools (bootloader/tegrarcm_v2, tegraflash) are x86-64 programs")
    assert problems[1] == (
        "missing host tools: abootimg (package abootimg), exportfs (package nfs-kernel-server), sshpass (package sshpass): "
        "run tools/l4t_flash_prerequisites.sh (the jetson_flash role does when it prepares the BSP from jetson_flash_bsp_tarball)"
    )
    assert problems[2] == "/usr/bin/qemu-aarch64-static is missing: l4t_create_default_user.sh needs it (package qemu-user-static)"


def test_flash_sh_needs_no_nfs_server():
    row = b.FLASH_TABLE[("p3701", "emmc")]
    assert (
        b.host_problems(
            row, "x86_64", lambda tool: None if tool in ("sshpass", "exportfs", "showmount") else "/x", exists=lambda _p: True, binfmt=lambda _n: True
        )
        == []
    )


def test_host_distribution_warning_names_the_supported_ones():
    assert b.host_warnings("R36.4.3", {"ID": "ubuntu", "VERSION_ID": "22.04"}) == []
    assert b.host_warnings("R36.4.3", {"ID": "ubuntu", "VERSION_ID": "20.04"}) == []
    (warning,) = b.host_warnings("R36.4.3", {"ID": "debian", "VERSION_ID": "12", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"})
    assert (
        warning == "this host is Debian GNU/Linux 12 (bookworm): NVIDIA supports flashing R36.4.3 from Ubuntu 20.04 and Ubuntu 22.04 only; "
        "it may work, but is untested by NVIDIA"
    )


def test_os_release_parsing(tmp_path):
    path = tmp_path / "os-release"
    path.write_text('PRETTY_NAME="Ubuntu 22.04.5 LTS"\nID=ubuntu\nVERSION_ID="22.04"\n')
    assert b.read_os_release(str(path)) == {"PRETTY_NAME": "Ubuntu 22.04.5 LTS", "ID": "ubuntu", "VERSION_ID": "22.04"}
    assert b.read_os_release(str(tmp_path / "absent")) == {}


# --- the board identity of an offline (massflash) image build --------------------------------------


def test_board_identity_from_the_readme_table():
    """Rows of the environment variables table at the end of README_initrd_flash.txt (R36.2)."""
    orin, agx = b.FAMILIES["p3767"], b.FAMILIES["p3701"]
    assert b.board_identity({"BOARDID": "3767", "BOARDSKU": "0005", "FAB": "300"}, orin) == {"BOARDID": "3767", "BOARDSKU": "0005", "FAB": "300"}
    assert b.board_identity({"BOARDID": "3701", "BOARDSKU": "0000", "FAB": "TS4", "BOARDREV": "A.0"}, agx)["BOARDREV"] == "A.0"
    # generate_rcm_bootcmd() in l4t_initrd_flash_internal.sh (R36.2) exports these to flash.sh too.
    extra = {"CHIP_SKU": "00:00:00:D3", "RAMCODE_ID": "1"}
    assert b.board_identity({"BOARDID": "3767", "BOARDSKU": "0005", "FAB": "300", **extra}, orin)["CHIP_SKU"] == "00:00:00:D3"


@pytest.mark.parametrize(
    ("identity", "family", "message"),
    [
        ({"BOARDID": "3701", "BOARDSKU": "0005", "FAB": "300"}, "p3767", "BOARDID 3701 is not 3767, the Jetson Orin NX/Nano the board config is for"),
        ({"BOARDID": "3767", "BOARDSKU": "0002", "FAB": "300"}, "p3767", r"BOARDSKU 0002 is not a Jetson Orin NX/Nano SKU \(0000, 0001, 0003, 0004, 0005\)"),
        ({"BOARDID": "3767", "BOARDSKU": "0005"}, "p3767", "FAB '' is not a value of the table"),
        ({"BOARDID": "3767", "BOARDSKU": "5", "FAB": "300"}, "p3767", "BOARDSKU '5' is not a value of the table"),
        ({"BOARDID": "3767", "BOARDSKU": "0005", "FAB": "300", "BOARDREV": "A.0; reboot"}, "p3767", "BOARDREV 'A.0; reboot' is not a value"),
        ({"BOARDID": "3767", "BOARDSKU": "0005", "FAB": "300", "ROOTFS_AB": "1"}, "p3767", r"unknown key\(s\) ROOTFS_AB"),
        ({"BOARDID": "3767", "BOARDSKU": "0005", "FAB": "300", "CHIP_SKU": "D3"}, "p3767", "CHIP_SKU 'D3' is not a value"),
        ({}, "p3701", "BOARDID '' is not a value of the table"),
        ("3767", "p3767", "is not a mapping"),
    ],
)
def test_board_identity_refusals(identity, family, message):
    with pytest.raises(b.BspError, match=message):
        b.board_identity(identity, b.FAMILIES[family])


def test_host_tools_per_storage_follow_the_table():
    """One list for the preflight and the role's prerequisites step (filter jetson_host_tools)."""
    assert {"sshpass", "exportfs", "showmount"} <= set(b.host_tools("nvme"))  # --network usb0
    assert set(b.host_tools("emmc")) == set(b.HOST_TOOLS)  # flash.sh: no NFS, no ssh
    assert set(b.host_tools("sd")) == set(b.host_tools("usb")) == set(b.host_tools("nvme"))
