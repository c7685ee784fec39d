"""A flashed board after its first boot: what it is, its power modes by name, its data partition."""

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_jetson_board as jb

from .l4t_tree import RELEASE_LINE

# /etc/nvpmodel.conf's format: mode definitions between "< POWER_MODEL ID=n NAME=x >" lines, then
# the default. The ids and names differ by module; these are an Orin Nano Super's on R36.4 (its
# POWER_MODEL lines as quoted from a board in public notes: 15W, 25W, MAXN_SUPER, 7W, default 2),
# so 7W is id 3 there, not 1 as on the Orin Nano before Super.
NVPMODEL_CONF = """\
# test copy: only the lines n3x reads, in nvpmodel.conf's format
< PARAM TYPE=FILE NAME=CPU_ONLINE >
CORE_0 /sys/devices/system/cpu/cpu0/online

< POWER_MODEL ID=0 NAME=15W >
CPU_ONLINE CORE_0 1
GPU MAX_FREQ 612000000

< POWER_MODEL ID=1 NAME=25W >
CPU_ONLINE CORE_0 1

< POWER_MODEL ID=2 NAME=MAXN_SUPER >
CPU_ONLINE CORE_0 1

< POWER_MODEL ID=3 NAME=7W >
CPU_ONLINE CORE_0 1

< PM_CONFIG DEFAULT=2 >
"""
QUERY_15W = "NV Fan Mode:quiet\nNV Power Mode: 15W\n0\n"


def test_power_models_by_name():
    assert jb.power_models(NVPMODEL_CONF) == ({"15W": 0, "25W": 1, "MAXN_SUPER": 2, "7W": 3}, 2)


def test_power_mode_resolves_the_name_and_compares_with_the_current_mode():
    assert jb.power_mode(NVPMODEL_CONF, "MAXN_SUPER", QUERY_15W) == {"id": 2, "name": "MAXN_SUPER", "current_id": 0, "current_name": "15W", "change": True}
    assert jb.power_mode(NVPMODEL_CONF, "15W", QUERY_15W)["change"] is False
    assert jb.power_mode(NVPMODEL_CONF, "7W")["change"] is True  # unknown current mode: set it


@pytest.mark.parametrize(
    ("conf", "name", "message"),
    [
        (
            NVPMODEL_CONF,
            "MAXN",
            r"power mode MAXN is not in /etc/nvpmodel.conf; this board's modes: 15W \(id 0\), 25W \(id 1\), MAXN_SUPER \(id 2\), 7W \(id 3\)",
        ),
        (NVPMODEL_CONF, "0", "power mode 0 is not in"),  # ids are not names
        (NVPMODEL_CONF, "15W; reboot", "is not a mode name"),
        ("garbage\n", "15W", "has no '< POWER_MODEL ID=n NAME=x >' line"),
    ],
)
def test_power_mode_refusals(conf, name, message):
    with pytest.raises(jb.BoardError, match=message):
        jb.power_mode(conf, name)


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("NVIDIA Jetson Orin Nano Developer Kit\x00", "p3767"),
        ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00", "p3767"),
        ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit\x00", "p3767"),
        ("NVIDIA Jetson AGX Orin Developer Kit\x00", "p3701"),
    ],
)
def test_the_board_is_what_was_flashed(model, family):
    check = jb.board_check(model, RELEASE_LINE + "\n", family, "R36.4")
    assert check == {"model": model.rstrip("\x00"), "release": "R36.4.3", "problems": []}


def test_a_board_that_is_not_what_was_flashed():
    check = jb.board_check("NVIDIA Jetson AGX Orin Developer Kit\x00", RELEASE_LINE.replace("4.3", "3.0"), "p3767", "R36.4")
    assert check["problems"] == [
        "/etc/nv_tegra_release: the board runs R36.3.0, expected R36.4",
        "/proc/device-tree/model: the board is 'NVIDIA Jetson AGX Orin Developer Kit', expected a Jetson Orin NX/Nano",
    ]
    missing = jb.board_check("", "", "p3701", "R36.4")
    assert missing["release"] is None
    assert len(missing["problems"]) == 2
    assert jb.board_check("linux,dummy-virt", "", "", "") == {"model": "linux,dummy-virt", "release": None, "problems": []}


LABEL = "n3x-longhorn"


@pytest.mark.parametrize(
    ("rc", "export", "wipe", "action", "message"),
    [
        (2, "", False, "format", "is empty: creating a file system labelled n3x-longhorn"),
        (0, "DEVNAME=/dev/nvme0n1p2\nUUID=1b2c\nBLOCK_SIZE=4096\nTYPE=ext4\nLABEL=n3x-longhorn\n", False, "mount", "holds n3x's file system"),
        (0, "DEVNAME=/dev/nvme0n1p2\nUUID=77aa\nTYPE=ext4\n", False, "refuse", "holds TYPE=ext4, UUID=77aa, not the file system n3x made"),
        (0, "UUID=77aa\nTYPE=xfs\nLABEL=data\n", False, "refuse", "it may hold data, so it is left untouched. Set jetson_data_wipe=true"),
        (0, "PTTYPE=gpt\nPTUUID=abcd\n", False, "refuse", "holds PTTYPE=gpt"),
        (0, "UUID=1b2c\nTYPE=LVM2_member\nLABEL=n3x-longhorn\n", False, "refuse", "TYPE=LVM2_member"),
        (0, "UUID=77aa\nTYPE=ext4\n", True, "wipe", "erasing it, as jetson_data_wipe says"),
        (4, "", False, "refuse", "blkid could not probe"),
    ],
)
def test_data_disk_decisions(rc, export, wipe, action, message):
    decision = jb.data_disk(rc, export, LABEL, wipe)
    assert decision["action"] == action
    assert message in decision["msg"]
