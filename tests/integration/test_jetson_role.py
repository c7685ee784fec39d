"""The Jetson modules, roles and playbooks, run for real as far as this machine allows.

There is no Jetson board, no USB and no BSP here. So: ansible-doc works; jetson-flash.yml and
jetson-massflash.yml, against the test Linux_for_Tegra tree of tests/unit/l4t_tree.py and a
sysfs tree listing boards in recovery mode, wait with a progress line, refuse the wrong module,
an unknown board config and a board outside the batch, and in check mode only run the
preflight; the jetson role's board detection and k3s settings run on the controller. The tree's
scripts record any execution; the tests assert they never ran. Nothing here flashes.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_jetson_bsp as bsp_rules

from ..unit.l4t_tree import make_bsp

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly n3x@controller"


def run(args, env=None, timeout=300):
    full_env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", **(env or {})}
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def flat(result):
    return " ".join((result.stdout + result.stderr).split())


@pytest.mark.parametrize("name", ["jetson_recovery", "jetson_flash"])
def test_ansible_doc(name):
    result = run(["ansible-doc", "--json", f"n3x.cluster.{name}"])
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)[f"n3x.cluster.{name}"]
    assert doc["doc"]["short_description"]
    assert doc["examples"]
    assert doc["return"]


def test_role_argument_specs_are_documented():
    for role in ("jetson", "jetson_flash"):
        result = run(["ansible-doc", "-t", "role", f"n3x.cluster.{role}"])
        assert result.returncode == 0, result.stderr
        assert re.search(r"ENTRY POINT: \*?main", result.stdout)


def test_playbooks_parse():
    for playbook in ("playbooks/jetson-flash.yml", "playbooks/jetson-massflash.yml", "playbooks/jetson.yml"):
        result = run(["ansible-playbook", "-i", "inventories/jetson/hosts.yml", "--syntax-check", playbook])
        assert result.returncode == 0, result.stdout + result.stderr


def test_render_the_sample_inventory(tmp_path):
    result = run(["ansible-playbook", "-i", "inventories/jetson/hosts.yml", "playbooks/render.yml", "-e", f"render_dir={tmp_path}"])
    assert result.returncode == 0, result.stdout + result.stderr
    for node, address in (("jetson-1", "10.0.200.21"), ("jetson-2", "10.0.200.22")):
        config = yaml.safe_load((tmp_path / node / "etc/rancher/k3s/config.yaml").read_text())
        assert config["server"] == "https://10.0.200.10:6443"
        assert config["node-ip"] == address
        assert "cluster-init" not in config


FAST_WAIT = {"jetson_flash_recovery_wait": 3, "jetson_flash_recovery_poll": 1}


def flash_play(tmp_path, sysfs_devices, extra=None, playbook="playbooks/jetson-flash.yml", check=True, limit="jetson-1", setup=None, env=None):
    """Run a flash playbook against the test BSP tree and a sysfs tree of boards in recovery mode."""
    bsp = make_bsp(tmp_path / "Linux_for_Tegra", marker=tmp_path / "scripts-ran")
    if setup:
        setup(bsp)
    sysfs = tmp_path / "usb"
    sysfs.mkdir()
    for name, product in sysfs_devices.items():
        entry = sysfs / name
        entry.mkdir()
        for key, value in {"idVendor": "0955", "idProduct": product, "busnum": name.split("-")[0], "devnum": "7", "product": "APX"}.items():
            (entry / key).write_text(value + "\n")
    variables = {
        "jetson_flash_bsp_dir": str(bsp),
        "jetson_flash_sysfs_root": str(sysfs),
        "jetson_flash_min_free_gib": 0,
        "jetson_flash_ssh_public_keys": [KEY],
        "jetson_flash_become": False,
        "jetson_flash_known_hosts": str(tmp_path / "known_hosts"),
        **FAST_WAIT,
        **(extra or {}),
    }
    argv = ["ansible-playbook", "-i", "inventories/jetson/hosts.yml", playbook, "-e", json.dumps(variables)]
    argv += ["--check"] if check else []
    argv += ["--limit", limit] if limit else []
    return run(argv, env), tmp_path / "scripts-ran", bsp


def missing_host_tools():
    """What this machine lacks of the host tools the flash preflight checks (none on a prepared flashing host)."""
    tools = {**bsp_rules.HOST_TOOLS, **bsp_rules.NETWORK_TOOLS}
    missing = sorted(tool for tool in tools if not shutil.which(tool))
    missing += [] if os.path.exists(bsp_rules.QEMU_STATIC) else ["qemu-aarch64-static"]
    return missing + ([] if bsp_rules.binfmt_enabled(bsp_rules.BINFMT_ENTRY) else [f"no enabled {bsp_rules.BINFMT_ENTRY} entry"])


def test_flash_waits_for_the_board_with_a_progress_line_then_refuses(tmp_path):
    result, marker, _bsp = flash_play(tmp_path, {})
    out = flat(result)
    assert result.returncode != 0
    # ansible-core 2.21 names the task with its role in the retry line.
    assert re.search(r"FAILED - RETRYING: \[jetson-1 -> localhost\]: (n3x\.cluster\.jetson_flash : )?Wait in recovery mode for jetson-1 at USB 1-2", out), out
    assert "jetson-1: after 3 s: no Jetson board in recovery mode on" in out
    assert "Force Recovery Mode" in out
    assert "TASK [n3x.cluster.jetson_flash : Flash jetson-1]" not in result.stdout
    assert "Traceback" not in out
    assert not marker.exists()


def test_an_unknown_board_config_fails_at_once_without_polling(tmp_path):
    result, marker, _bsp = flash_play(tmp_path, {"1-2": "7523"}, {"jetson_flash_board_config": "jetson-orin-nano-devkit-64gb"})
    out = flat(result)
    assert result.returncode != 0
    assert "jetson-orin-nano-devkit-64gb.conf does not exist: board config jetson-orin-nano-devkit-64gb is not in this BSP" in out
    assert "attempts: 1 " in out  # failed on the first look, not polled
    assert not marker.exists()


def test_a_storage_the_table_refuses_fails_before_any_wait(tmp_path):
    result, marker, _bsp = flash_play(tmp_path, {"1-2": "7523"}, {"jetson_flash_storage": "emmc"})
    out = flat(result)
    assert result.returncode != 0
    assert "Jetson Orin NX/Nano modules have no eMMC: flash them to nvme, usb or sd" in out
    assert "attempts: 1 " in out  # refused on the first look, not polled
    assert not marker.exists()


def test_the_wrong_module_is_never_flashed(tmp_path):
    result, marker, _bsp = flash_play(tmp_path, {"1-2": "7023"})
    out = flat(result)
    assert result.returncode != 0
    assert "wrong module: found Jetson AGX Orin (0955:7023, USB path 1-2), but the board config is for Jetson Orin NX/Nano; refusing to flash" in out
    assert "TASK [n3x.cluster.jetson_flash : Flash jetson-1]" not in result.stdout
    assert not marker.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the flash preflight refuses without root, as it should")
def test_flash_check_mode_runs_the_preflight_and_nothing_else(tmp_path):
    result, marker, bsp = flash_play(tmp_path, {"1-2": "7523", "1-3": "7523"})
    out = flat(result)
    missing = missing_host_tools()
    if missing:  # a machine that is not a prepared flashing host: refused, naming what is missing
        assert result.returncode != 0
        assert "refusing to flash:" in out
        for tool in missing:
            assert tool in out
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "check mode: would run ./tools/kernel_flash/l4t_initrd_flash.sh --usb-instance 1-2 --external-device nvme0n1p1" in out
    assert not marker.exists()
    assert not (bsp / ".n3x").exists()
    assert not (tmp_path / "known_hosts").exists()


def test_massflash_refuses_a_board_in_recovery_that_is_not_in_the_batch(tmp_path):
    result, marker, _bsp = flash_play(tmp_path, {"1-2": "7523", "1-3": "7523", "1-4": "7523"}, playbook="playbooks/jetson-massflash.yml", limit=None)
    out = flat(result)
    assert result.returncode != 0
    if os.geteuid() == 0 and not missing_host_tools():
        assert "in recovery mode but not in the batch: 1-4; refusing to flash" in out
    else:
        assert "refusing to flash" in out
    assert not marker.exists()


# The list prepare.yml probed by hand before it took the preflight's (filter jetson_host_tools).
FORMER_PROBE = ("abootimg", "sshpass", "exportfs", "xmllint", "dtc", "lz4c", "mkpasswd", "uuidgen", "cpio", "lbzip2", "openssl")


@pytest.mark.skipif(os.geteuid() != 0, reason="the role checks the prepared rootfs has sudo setuid root, which needs root to set up")
def test_preparing_the_bsp_installs_the_prerequisites_whenever_the_preflight_would_miss_a_tool(tmp_path):
    """Stand-ins on PATH (empty scripts, probed with command -v and never run) for every command
    the former hand-written probe looked for: a command only the preflight checks must still
    make the role run tools/l4t_flash_prerequisites.sh."""
    stubs = tmp_path / "stub-bin"
    stubs.mkdir()
    for tool in FORMER_PROBE:
        (stubs / tool).write_text("#!/bin/sh\nexit 0\n")
        (stubs / tool).chmod(0o755)
    path = f"{stubs}:{os.environ['PATH']}"
    lacking = [t for t in bsp_rules.host_tools("nvme") if not shutil.which(t, path=path)]
    if not lacking:
        pytest.skip("this machine has every command the preflight checks: none is missing to prove the point")

    def prepared(bsp):
        sudo = bsp / "rootfs/usr/bin/sudo"
        sudo.parent.mkdir(parents=True)
        sudo.write_text("")
        sudo.chmod(0o4755)

    extra = {"jetson_flash_bsp_tarball": str(tmp_path / "Jetson_Linux_R36.4.3_aarch64.tbz2")}
    result, marker, _bsp = flash_play(tmp_path, {}, extra, check=False, setup=prepared, env={"PATH": path})
    out = flat(result)
    assert result.returncode != 0  # the test tree's prerequisites script records its run and exits 1
    assert "TASK [n3x.cluster.jetson_flash : Install the host tools NVIDIA's scripts need]" in result.stdout
    assert "tools/l4t_flash_prerequisites.sh" in marker.read_text(), out


PROBE = """\
- name: Probe the jetson role's board detection and k3s settings
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Detect
      ansible.builtin.include_role:
        name: n3x.cluster.jetson
        tasks_from: detect.yml
    - name: Compose
      ansible.builtin.include_role:
        name: n3x.cluster.jetson
        tasks_from: k3s_prepare.yml
    - name: Show
      ansible.builtin.debug:
        msg: "PROBE {{ {'tegra': jetson_is_tegra, 'model': jetson_model, 'config': jetson_k3s_config} | to_json }} PROBE"
"""


def probe(tmp_path, model_text=None):
    playbook = tmp_path / "probe.yml"
    playbook.write_text(PROBE)
    # No MemoryMax: its handler would restart k3s through systemd, which this machine may lack.
    extra = {"jetson_memory_dropin": str(tmp_path / "dropin.conf"), "jetson_k3s_memory_max": "", "jetson_node_labels": {"site": "plant-3"}}
    if model_text is not None:
        model = tmp_path / "model"
        model.write_bytes(model_text)
        extra.update(jetson_model_file=str(model), jetson_compatible_file=str(tmp_path / "absent"), jetson_nvidia_runtime_bin="/bin/sh")
    else:
        extra.update(jetson_model_file=str(tmp_path / "absent"), jetson_compatible_file=str(tmp_path / "absent"))
    extra["ansible_python_interpreter"] = sys.executable
    result = run(["ansible-playbook", "-i", "localhost,", str(playbook), "--check", "-e", json.dumps(extra)])
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(re.search(r"PROBE (\{.*\}) PROBE", flat(result)).group(1)), result


def test_a_tegra_board_gets_the_gpu_label_and_the_nvidia_runtime(tmp_path):
    facts, _result = probe(tmp_path, b"NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00")
    assert facts["tegra"] is True
    assert facts["model"] == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    assert facts["config"] == {
        "node-label": ["n3x.io/hardware-model=NVIDIA-Jetson-Orin-Nano-Engineering-Reference-Developer-Kit-Sup", "gpu=nvidia", "site=plant-3"],
        "default-runtime": "nvidia",
    }


def test_elsewhere_the_tegra_steps_are_skipped_with_the_reason(tmp_path):
    facts, result = probe(tmp_path)
    assert facts["tegra"] is False
    assert facts["config"] == {"node-label": ["site=plant-3"]}
    assert "NVIDIA container runtime skipped: not a Tegra board" in flat(result)
    assert "not a Tegra board (no " in flat(result)


SWAP_PROBE = """\
- name: Probe the jetson role's swap step, in check mode so nothing changes here
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Swap
      ansible.builtin.include_role:
        name: n3x.cluster.jetson
        tasks_from: swap.yml
"""


@pytest.mark.parametrize(
    ("content", "removed"),
    [
        (
            "# Generated by n3x.cluster (role jetson); removed by it when jetson_swap is off.\n"
            "[zram0]\nzram-size = min(ram / 2, 4096)\ncompression-algorithm = zstd\n",
            True,
        ),
        ("# Generated by n3x.cluster (role jetson).\n[zram0]\nzram-size = min(ram / 2, 4096)\ncompression-algorithm = zstd\n", True),
        # Starts like n3x's file, but is not it: someone else's now.
        ("# Generated by n3x.cluster (role jetson).\n[zram0]\nzram-size = ram\n", False),
        ("[zram0]\nzram-size = 8192\n", False),
    ],
)
def test_swap_off_removes_only_the_zram_config_n3x_wrote(tmp_path, content, removed):
    conf = tmp_path / "zram-generator.conf"
    conf.write_text(content)
    playbook = tmp_path / "swap.yml"
    playbook.write_text(SWAP_PROBE)
    extra = {"jetson_swap": "off", "jetson_zram_conf": str(conf), "ansible_python_interpreter": sys.executable}
    result = run(["ansible-playbook", "-i", "localhost,", str(playbook), "--check", "-e", json.dumps(extra)])
    assert result.returncode == 0, result.stdout + result.stderr
    task = result.stdout.split("Remove the zram configuration n3x wrote]", 1)[1].split("TASK [", 1)[0]
    assert ("changed: [localhost]" in task) is removed
    assert ("is not the file n3x writes" in flat(result)) is not removed
    assert conf.read_text() == content  # check mode


def test_host_keys_are_checked_on_the_jetson_inventory():
    result = run(["ansible-inventory", "-i", "inventories/jetson/hosts.yml", "--host", "jetson-1"])
    assert result.returncode == 0, result.stderr
    host = json.loads(result.stdout)
    assert host["ansible_host_key_checking"] is True
    assert host["jetson_flash_usb_path"] == "1-2"


DETECT_PROBE = """\
- name: Probe the jetson role's board check
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Detect
      ansible.builtin.include_role:
        name: n3x.cluster.jetson
        tasks_from: detect.yml
"""
RELEASE = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"


@pytest.mark.parametrize(
    ("family", "release", "problem"),
    [
        ("p3767", "R36.4", None),
        ("p3701", "R36.4", "/proc/device-tree/model: the board is 'NVIDIA Jetson Orin Nano Developer Kit', expected a Jetson AGX Orin"),
        ("p3767", "R36.3", "/etc/nv_tegra_release: the board runs R36.4.3, expected R36.3"),
    ],
)
def test_the_first_boot_check_compares_the_board_with_what_was_flashed(tmp_path, family, release, problem):
    (tmp_path / "model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    (tmp_path / "nv_tegra_release").write_text(RELEASE)
    playbook = tmp_path / "detect.yml"
    playbook.write_text(DETECT_PROBE)
    extra = {
        "jetson_model_file": str(tmp_path / "model"),
        "jetson_compatible_file": str(tmp_path / "absent"),
        "jetson_release_file": str(tmp_path / "nv_tegra_release"),
        "jetson_expected_family": family,
        "jetson_expected_release": release,
        "ansible_python_interpreter": sys.executable,
    }
    # JSON results: ansible-core before 2.19 re-quotes a YAML result's ' as ''.
    result = run(["ansible-playbook", "-i", "localhost,", str(playbook), "-e", json.dumps(extra)], env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    out = flat(result)
    assert "Tegra board: NVIDIA Jetson Orin Nano Developer Kit, L4T R36.4.3" in out
    if problem is None:
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        assert result.returncode != 0
        assert f"localhost: {problem}" in out
