"""Boards in recovery mode, which board to flash, the flash run in its own process group, the verdict.

The process-group tests run a real process tree (a shell script that spawns children and traps
EXIT); nothing here flashes anything, and nothing claims a board was flashed.
"""

import os
import signal
import time

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_jetson as j
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson_bsp import FAMILIES, FLASH_TABLE, flash_command
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_process import run_in_process_group

ORIN = FAMILIES["p3767"]
AGX = FAMILIES["p3701"]

# Recorded `lsusb` output of a flashing host (an x86 workstation).
LSUSB_NONE = """\
Bus 002 Device 001: ID 1d6b:0003 Linux Foundation 3.0 root hub
Bus 001 Device 003: ID 046d:c52b Logitech, Inc. Unifying Receiver
Bus 001 Device 002: ID 8087:0aaa Intel Corp. Bluetooth 9460/9560 Jefferson Peak (JfP)
Bus 001 Device 001: ID 1d6b:0002 Linux Foundation 2.0 root hub
"""
LSUSB_ORIN_NANO = LSUSB_NONE + "Bus 001 Device 007: ID 0955:7523 NVIDIA Corp. APX\n"
LSUSB_TWO = LSUSB_ORIN_NANO + "Bus 003 Device 012: ID 0955:7523 NVIDIA Corp. APX\n"
# A booted Jetson (USB device mode), not in recovery mode.
LSUSB_BOOTED = LSUSB_NONE + "Bus 001 Device 009: ID 0955:7020 NVIDIA Corp. L4T (Linux for Tegra) running on Tegra\n"


def boards_of(text):
    return j.detect_boards(j.parse_lsusb(text))


def test_parse_lsusb_reads_every_device():
    devices = j.parse_lsusb(LSUSB_ORIN_NANO)
    assert len(devices) == 5
    nano = next(d for d in devices if d["vendor"] == "0955")
    assert nano == {"bus": 1, "device": 7, "vendor": "0955", "product": "7523", "description": "NVIDIA Corp. APX", "usb_path": None}


@pytest.mark.parametrize(
    ("pid", "module", "family"),
    [
        ("7323", "Jetson Orin NX 16GB", "p3767"),
        ("7423", "Jetson Orin NX 8GB", "p3767"),
        ("7523", "Jetson Orin Nano 8GB", "p3767"),
        ("7623", "Jetson Orin Nano 4GB", "p3767"),
        ("7023", "Jetson AGX Orin", "p3701"),
        ("7223", "Jetson AGX Orin 32GB", "p3701"),
    ],
)
def test_recovery_ids_from_the_bsp(pid, module, family):
    (board,) = boards_of(f"Bus 001 Device 004: ID 0955:{pid} NVIDIA Corp. APX\n")[0]
    assert (board["module"], board["family"]) == (module, family)
    assert j.select_board([board], FAMILIES[family])["product"] == pid


def test_no_board():
    boards, others = boards_of(LSUSB_NONE)
    assert (boards, others) == ([], [])
    with pytest.raises(j.JetsonError, match=r"^no Jetson board in recovery mode on flasher: .*0955:7523 Jetson Orin Nano 8GB"):
        j.select_board(boards, ORIN, host="flasher")


def test_a_booted_jetson_is_not_a_board_in_recovery_mode():
    boards, others = boards_of(LSUSB_BOOTED)
    assert boards == []
    with pytest.raises(j.JetsonError, match=r"not in recovery mode .*: 0955:7020"):
        j.select_board(boards, others=others)


def test_wrong_module_is_refused():
    boards, _ = boards_of(LSUSB_NONE + "Bus 001 Device 010: ID 0955:7023 NVIDIA Corp. APX\n")
    with pytest.raises(j.JetsonError, match=r"^wrong module: found Jetson AGX Orin .*, but the board config is for Jetson Orin NX/Nano; refusing to flash$"):
        j.select_board(boards, ORIN)
    boards, _ = boards_of(LSUSB_ORIN_NANO)
    with pytest.raises(j.JetsonError, match=r"wrong module: found Jetson Orin Nano 8GB .* is for Jetson AGX Orin"):
        j.select_board(boards, AGX)


@pytest.mark.parametrize(("pid", "ok"), [("7523", True), ("7323", False), ("7423", False), ("7623", False)])
def test_only_the_module_with_the_sd_slot_takes_sd(pid, ok):
    boards, _ = boards_of(f"Bus 001 Device 004: ID 0955:{pid} NVIDIA Corp. APX\n")
    if ok:
        assert j.select_board(boards, ORIN, storage="sd")["product"] == pid
    else:
        with pytest.raises(j.JetsonError, match="has no microSD slot: only the Orin Nano devkit module"):
            j.select_board(boards, ORIN, storage="sd")
        assert j.select_board(boards, ORIN, storage="nvme")["product"] == pid


def test_two_boards_without_a_usb_path_are_refused():
    boards, _ = boards_of(LSUSB_TWO)
    with pytest.raises(j.JetsonError, match=r"2 Jetson boards in recovery mode .* set the USB path of each board"):
        j.select_board(boards, ORIN)


def make_sysfs(root, devices):
    for name, fields in devices.items():
        entry = root / name
        entry.mkdir(parents=True)
        for key, value in fields.items():
            (entry / key).write_text(value + "\n")
    (root / "usb1").mkdir()  # a root hub, skipped by name
    (root / "1-2:1.0").mkdir()  # an interface, skipped by name


def apx(bus, dev, pid="7523"):
    return {"idVendor": "0955", "idProduct": pid, "busnum": str(bus), "devnum": str(dev), "product": "APX"}


@pytest.fixture
def two_in_recovery(tmp_path):
    make_sysfs(tmp_path, {"1-2": apx(1, 7), "3-1.4": apx(3, 12), "1-1": {"idVendor": "046d", "idProduct": "c52b", "busnum": "1", "devnum": "3"}})
    return j.detect_boards(j.read_sysfs_usb(str(tmp_path)))[0]


def test_sysfs_gives_usb_paths_and_selects_by_path(two_in_recovery):
    assert sorted(b["usb_path"] for b in two_in_recovery) == ["1-2", "3-1.4"]
    assert j.select_board(two_in_recovery, ORIN, usb_path="3-1.4")["device"] == 12
    with pytest.raises(j.JetsonError, match="no Jetson board in recovery mode at USB path 2-9"):
        j.select_board(two_in_recovery, ORIN, usb_path="2-9")


def test_another_board_in_recovery_is_refused_when_the_script_would_not_skip_it(two_in_recovery):
    with pytest.raises(j.JetsonError, match=r"2 Jetson boards in recovery mode .* does not skip boards other than --usb-instance"):
        j.select_board(two_in_recovery, ORIN, usb_path="1-2", sole=True)
    assert j.select_board(two_in_recovery[:1], ORIN, usb_path="1-2", sole=True)["usb_path"] == "1-2"


def test_no_sysfs_usb_tree_is_none(tmp_path):
    assert j.read_sysfs_usb(str(tmp_path / "absent")) is None


def test_find_boards_result_for_polling():
    found = j.find_boards(lambda: ([], "none"), ORIN, host="flasher")
    assert found["failed"]
    assert "no USB device is visible at all" in found["msg"]
    lenient = j.find_boards(lambda: (j.parse_lsusb(LSUSB_NONE), "lsusb"), ORIN, required=False)
    assert "failed" not in lenient
    assert lenient["selected"] is None
    assert lenient["reason"].startswith("no Jetson board in recovery mode")
    ok = j.find_boards(lambda: (j.parse_lsusb(LSUSB_ORIN_NANO), "lsusb"), ORIN)
    assert ok["selected"]["usb_id"] == "0955:7523"


# --- massflash: the boards in recovery mode must be exactly the batch ---------------------------------


def test_the_batch_must_be_exactly_the_boards_in_recovery(two_in_recovery):
    assert [b["usb_path"] for b in j.select_batch(two_in_recovery, ORIN, ["3-1.4", "1-2"], 2)] == ["1-2", "3-1.4"]
    with pytest.raises(j.JetsonError, match=r"in recovery mode but not in the batch: 3-1.4; refusing to flash"):
        j.select_batch(two_in_recovery, ORIN, ["1-2"], 2)
    with pytest.raises(j.JetsonError, match=r"not in recovery mode: 2-1; "):
        j.select_batch(two_in_recovery, ORIN, ["1-2", "3-1.4", "2-1"], 3)
    with pytest.raises(j.JetsonError, match="wrong module"):
        j.select_batch(two_in_recovery, AGX, ["1-2", "3-1.4"], 2)
    with pytest.raises(j.JetsonError, match="more than --massflash 1"):
        j.select_batch(two_in_recovery, ORIN, ["1-2", "3-1.4"], 1)
    with pytest.raises(j.JetsonError, match="needs its own USB path"):
        j.select_batch(two_in_recovery, ORIN, ["1-2", "1-2"], 2)


def test_the_batch_must_be_of_the_sku_its_images_are_built_for(two_in_recovery):
    assert len(j.select_batch(two_in_recovery, ORIN, ["1-2", "3-1.4"], 2, sku="0003")) == 2
    assert len(j.select_batch(two_in_recovery, ORIN, ["1-2", "3-1.4"], 2, sku="0005")) == 2  # the devkit module shows 7523 too
    with pytest.raises(j.JetsonError, match=r"^wrong module: found Jetson Orin Nano 8GB .* built for BOARDSKU 0000 \(recovery id 7323\)"):
        j.select_batch(two_in_recovery, ORIN, ["1-2", "3-1.4"], 2, sku="0000")


def test_massflash_needs_sysfs_paths():
    boards, _ = boards_of(LSUSB_TWO)
    with pytest.raises(j.JetsonError, match="only through lsusb"):
        j.select_batch(boards, ORIN, ["1-2", "3-1.4"], 2)


# --- the verdict: flashed only with exit 0 and the success line ------------------------------------------

INITRD_SUCCESS = "Flash is successful\nReboot device\nCleaning up...\nLog is saved to Linux_for_Tegra/initrdlog/flash_1-2_0_20250226-163014.log\n"
FLASH_SH_SUCCESS = (
    "[ 1237.8604 ] MB2 version 01.00.0000\n*** The target generic has been flashed successfully. ***\nReset the board to boot from internal eMMC.\n"
)
NVME = flash_command(FLASH_TABLE[("p3767", "nvme")], "jetson-orin-nano-devkit")
EMMC = flash_command(FLASH_TABLE[("p3701", "emmc")], "jetson-agx-orin-devkit")


def test_flashed_only_with_rc_0_and_the_success_line():
    assert j.flash_result(0, INITRD_SUCCESS, NVME)["flashed"] is True
    assert j.flash_result(0, INITRD_SUCCESS.replace("\n", "\r\n"), NVME)["flashed"] is True  # relayed over ssh
    assert j.flash_result(0, FLASH_SH_SUCCESS, EMMC)["flashed"] is True


@pytest.mark.parametrize(
    ("rc", "output", "argv", "message"),
    [
        (1, INITRD_SUCCESS, NVME, "failed with exit code 1; the board is NOT flashed"),
        (0, "Waiting for target to boot-up...\nTimeout\nCleaning up...\n", NVME, "never printed its success line; the board is NOT known to be flashed"),
        (0, "", NVME, "never printed its success line"),
        (0, FLASH_SH_SUCCESS, NVME, "never printed its success line"),  # flash.sh's line does not count for the initrd flash
        (0, INITRD_SUCCESS, EMMC, "never printed its success line"),
        (0, "echo Flash is successful\n", NVME, "never printed its success line"),
        (0, "+ echo 'Flash is successful'\n", NVME, "never printed its success line"),
        (
            255,
            "Error: probing the target board failed.\n",
            EMMC,
            "failed with exit code 255; the board is NOT flashed: Error: probing the target board failed.",
        ),
    ],
)
def test_not_flashed(rc, output, argv, message):
    verdict = j.flash_result(rc, output, argv)
    assert verdict["flashed"] is False
    assert message in verdict["msg"]


def test_a_timed_out_flash_is_never_flashed():
    verdict = j.flash_result(0, INITRD_SUCCESS, NVME, timed_out=True)
    assert verdict["flashed"] is False
    assert "stopped after the timeout" in verdict["msg"]


MASS_OUT = """\
Start flashing device: 1-2, rcm instance: 0, PID: 4101
Log will be saved to Linux_for_Tegra/initrdlog/flash_1-2_0_20250226-163014.log
Start flashing device: 3-1.4, rcm instance: 1, PID: 4102
Log will be saved to Linux_for_Tegra/initrdlog/flash_3-1.4_1_20250226-163014.log
Ongoing processes: 4101 4102
"""


def test_massflash_results_read_each_boards_own_log(tmp_path):
    logs = {
        str(tmp_path / "initrdlog/flash_1-2_0_20250226-163014.log"): "...\nFlash is successful\nReboot device\n",
        str(tmp_path / "initrdlog/flash_3-1.4_1_20250226-163014.log"): "...\nError flashing non-qspi storage\n",
    }
    results = j.massflash_results(0, MASS_OUT, str(tmp_path), ["1-2", "3-1.4", "1-3"], read=logs.__getitem__)
    assert results["1-2"]["flashed"] is True
    assert results["3-1.4"]["flashed"] is False
    assert "no success line" in results["3-1.4"]["msg"]
    assert results["1-3"]["flashed"] is False
    assert "never started a flash for USB path 1-3" in results["1-3"]["msg"]
    failed = j.massflash_results(1, MASS_OUT + "Flash complete (WITH FAILURES)\n", str(tmp_path), ["1-2"], read=logs.__getitem__)
    assert failed["1-2"]["flashed"] is False
    assert "exited 1; NOT reported flashed" in failed["1-2"]["msg"]


# --- the flash in its own process group: a real process tree -------------------------------------------

TREE = """\
#!/bin/bash
# Stands for a flash script: an EXIT trap that cleans the host, children that keep running.
trap 'echo cleaned > "{out}/trap-ran"' EXIT
{term}
sleep 300 &
echo $! > "{out}/child"
bash -c 'sleep 300 & echo $! > "{out}/grandchild"; wait' &
sleep 300
"""


def run_tree(tmp_path, timeout, grace=5, term=""):
    script = tmp_path / "tree.sh"
    script.write_text(TREE.format(out=tmp_path, term=term))
    script.chmod(0o755)
    with open(tmp_path / "log", "w") as log:
        started = time.monotonic()
        rc, timed_out = run_in_process_group([str(script)], str(tmp_path), log, timeout, grace)
        return rc, timed_out, time.monotonic() - started


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for this purpose.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


def wait_for(path):
    for _ in range(100):
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} never written")


def test_timeout_terms_the_whole_group_and_the_exit_trap_runs(tmp_path):
    rc, timed_out, took = run_tree(tmp_path, timeout=2)
    assert timed_out
    assert rc != 0
    assert (tmp_path / "trap-ran").read_text() == "cleaned\n"
    for name in ("child", "grandchild"):
        assert not alive(wait_for(tmp_path / name)), name
    assert took < 2 + 5  # SIGTERM was enough: no wait for the grace period


def test_a_group_ignoring_sigterm_gets_sigkill_after_the_grace(tmp_path):
    rc, timed_out, took = run_tree(tmp_path, timeout=1, grace=2, term="trap '' TERM")
    assert timed_out
    assert rc == -signal.SIGKILL
    assert 1 + 2 <= took < 1 + 2 + 5
    for name in ("child", "grandchild"):
        assert not alive(wait_for(tmp_path / name)), name


def test_a_script_that_finishes_keeps_its_exit_code_and_leaves_nothing(tmp_path):
    script = tmp_path / "quick.sh"
    script.write_text(f'#!/bin/bash\nsleep 300 &\necho $! > "{tmp_path}/child"\necho "Flash is successful"\nexit 3\n')
    script.chmod(0o755)
    with open(tmp_path / "log", "w") as log:
        rc, timed_out = run_in_process_group([str(script)], str(tmp_path), log, 30, 5)
    assert (rc, timed_out) == (3, False)
    assert not alive(wait_for(tmp_path / "child"))
    assert "Flash is successful" in (tmp_path / "log").read_text()


def test_the_group_is_not_ours(tmp_path):
    """The flash runs in a new session: a signal to its group never reaches this test process."""
    script = tmp_path / "sid.sh"
    script.write_text("#!/bin/sh\nps -o sid= -p $$\n")
    script.chmod(0o755)
    with open(tmp_path / "log", "w") as log:
        run_in_process_group([str(script)], str(tmp_path), log, 30, 5)
    assert int((tmp_path / "log").read_text()) != os.getsid(0)
