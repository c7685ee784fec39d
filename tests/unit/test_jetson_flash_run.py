"""jetson_flash after its preflight: every way out puts the BSP's rootfs back in its clean state.

The run goes through the module's own code (plugins/modules/jetson_flash.py, ``run``) with the
test Linux_for_Tegra tree of l4t_tree.py, a sysfs tree listing a board in recovery mode and the
test copy of l4t_create_default_user.sh from test_jetson_image.py (real useradd on the test
rootfs). The tree's flash scripts only record their arguments and exit 1: nothing is flashed,
and every case here ends in a refusal or a failed step. ``ModuleRecorder`` stands in for
AnsibleModule's few methods the run calls (commands run for real).
"""

import os
import subprocess

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_jetson_bsp as b
from ansible_collections.n3x.cluster.plugins.modules import jetson_flash

from .l4t_tree import make_bsp
from .test_jetson_image import DEFAULT_USER, KEY_1, make_rootfs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the image customisation runs useradd --prefix and chown, as root")


class ModuleRecorder:
    check_mode = False

    def __init__(self):
        self.warnings = []

    def warn(self, message):
        self.warnings.append(message)

    def get_bin_path(self, _name):
        return None

    def run_command(self, argv, cwd=None):
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
        return done.returncode, done.stdout, done.stderr


@pytest.fixture
def bsp(tmp_path):
    bsp = make_bsp(tmp_path / "Linux_for_Tegra", marker=tmp_path / "scripts-ran")
    make_rootfs(bsp / "rootfs")
    script = bsp / "tools/l4t_create_default_user.sh"
    script.write_text(DEFAULT_USER)
    script.chmod(0o755)
    return bsp


def sysfs_with(tmp_path, paths, product="7523"):
    root = tmp_path / "usb"
    for path in paths:
        entry = root / path
        entry.mkdir(parents=True)
        for key, value in {"idVendor": "0955", "idProduct": product, "busnum": path.split("-")[0], "devnum": "7", "product": "APX"}.items():
            (entry / key).write_text(value + "\n")
    return root


def params(bsp, tmp_path, sysfs, **overrides):
    p = {name: spec.get("default") for name, spec in jetson_flash.ARGUMENT_SPEC.items()}
    p.update(
        bsp_dir=str(bsp),
        board_config="jetson-orin-nano-devkit",
        ssh_public_keys=[KEY_1],
        hostname="jetson-1",
        usb_path="1-2",
        log_dir=str(tmp_path / "logs"),
        timeout=60,
        kill_grace=5,
        sysfs_root=str(sysfs),
    )
    p.update(overrides)
    return p


def run_flash(p):
    """The module's run after its preflight: (failed, result)."""
    return jetson_flash.run(ModuleRecorder(), p, jetson_flash.plan_for(p))


def scripts_ran(tmp_path):
    """What the test tree's recording scripts were run with."""
    marker = tmp_path / "scripts-ran"
    return marker.read_text() if marker.exists() else ""


def assert_clean(bsp):
    rootfs = bsp / "rootfs"
    for gone in ("home/n3x", "etc/sudoers.d/90-n3x-n3x", "etc/ssh/ssh_host_ed25519_key", "etc/ssh/sshd_config.d/10-n3x.conf"):
        assert not os.path.lexists(rootfs / gone), gone
    assert "jetson-1" not in (rootfs / "etc/hosts").read_text()
    assert (rootfs / "etc/ssh/ssh_host_rsa_key").exists()  # the sample rootfs's own file, back


def test_a_foreign_layout_file_is_refused_and_the_rootfs_put_back(bsp, tmp_path):
    (bsp / b.LONGHORN_LAYOUT).write_text("<partition_layout/>\n")  # someone else's file
    p = params(bsp, tmp_path, sysfs_with(tmp_path, ["1-2"]), data_partition=True, app_size="64GiB")
    failed, result = run_flash(p)
    assert failed
    assert "exists and n3x did not write it; refusing to replace it; nothing was flashed" in result["msg"]
    assert_clean(bsp)
    assert "l4t_initrd_flash.sh" not in scripts_ran(tmp_path)


def test_a_board_gone_before_the_flash_is_never_flashed_and_the_rootfs_put_back(bsp, tmp_path):
    sysfs = sysfs_with(tmp_path, ["1-2"])
    # The board is unplugged while its image is built.
    script = bsp / "tools/l4t_create_default_user.sh"
    script.write_text(DEFAULT_USER + f'rm -rf "{sysfs}/1-2"\n')
    p = params(bsp, tmp_path, sysfs)
    failed, result = run_flash(p)
    assert failed
    assert "(checked again right before flashing); nothing was flashed" in result["msg"]
    assert_clean(bsp)
    assert "l4t_initrd_flash.sh" not in scripts_ran(tmp_path)


def test_a_failed_flash_is_not_flashed_and_the_rootfs_put_back(bsp, tmp_path):
    p = params(bsp, tmp_path, sysfs_with(tmp_path, ["1-2"]))
    failed, result = run_flash(p)
    assert failed
    assert result["flashed"] is False
    assert "failed with exit code 1; the board is NOT flashed" in result["msg"]
    assert_clean(bsp)


BATCH = [{"name": "jetson-1", "usb_path": "1-2"}, {"name": "jetson-2", "usb_path": "1-3"}]
# An Orin Nano devkit's row of the table at the end of README_initrd_flash.txt.
NANO_DEVKIT = {"BOARDID": "3767", "BOARDSKU": "0005", "FAB": "300"}


def test_a_failed_massflash_image_build_puts_the_rootfs_back(bsp, tmp_path):
    p = params(bsp, tmp_path, sysfs_with(tmp_path, ["1-2", "1-3"]), massflash=True, batch=BATCH, usb_path=None, board_identity=NANO_DEVKIT)
    failed, result = run_flash(p)
    assert failed
    assert result["msg"].startswith("building the massflash images failed (exit 1); no board was flashed")
    assert_clean(bsp)
    assert "--no-flash --massflash 2" in scripts_ran(tmp_path)
    assert "--flash-only" not in scripts_ran(tmp_path)


def test_the_massflash_images_are_built_offline_from_the_board_identity(bsp, tmp_path):
    """Workflow 7 of README_initrd_flash.txt builds the images with BOARDID, BOARDSKU, FAB and
    BOARDREV in the environment, touching no board; online, the build would read one of the
    boards in recovery mode, which must be alone and be put in recovery mode again after."""
    script = bsp / "tools/kernel_flash/l4t_initrd_flash.sh"
    script.write_text(f'#!/bin/sh\necho "BOARDID=$BOARDID BOARDSKU=$BOARDSKU FAB=$FAB BOARDREV=$BOARDREV $*" >> {tmp_path}/scripts-ran\nexit 1\n')
    p = params(bsp, tmp_path, sysfs_with(tmp_path, ["1-2", "1-3"]), massflash=True, batch=BATCH, usb_path=None, board_identity=NANO_DEVKIT)
    run_flash(p)
    assert scripts_ran(tmp_path).startswith("BOARDID=3767 BOARDSKU=0005 FAB=300 BOARDREV= --no-flash --massflash 2 ")


def test_massflash_without_the_board_identity_is_refused_before_any_change(bsp, tmp_path):
    p = params(bsp, tmp_path, sysfs_with(tmp_path, ["1-2", "1-3"]), massflash=True, batch=BATCH, usb_path=None)
    _found, problems, _warnings = jetson_flash.preflight(ModuleRecorder(), p)
    assert any(
        problem.startswith("board identity: BOARDID '' is not a value of the table at the end of tools/kernel_flash/README_initrd_flash.txt: ")
        and "massflash builds the batch's images offline" in problem
        for problem in problems
    ), problems
    assert not (bsp / ".n3x").exists()


def test_a_batch_of_another_sku_than_its_images_is_never_flashed(bsp, tmp_path):
    """Images built for BOARDSKU 0005 (Orin Nano 8GB, recovery id 7523) on Orin NX 16GB boards (7323)."""
    p = params(bsp, tmp_path, sysfs_with(tmp_path, ["1-2", "1-3"], product="7323"), massflash=True, batch=BATCH, usb_path=None, board_identity=NANO_DEVKIT)
    failed, result = run_flash(p)
    assert failed
    assert "but the batch's images are built for BOARDSKU 0005 (recovery id 7523); refusing to flash" in result["msg"]
    assert not (bsp / ".n3x").exists()
    assert scripts_ran(tmp_path) == ""
