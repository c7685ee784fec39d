"""The Jetson modules, roles and playbooks, run for real as far as this machine allows.

There is no Jetson board, no USB and no BSP here. So: ansible-doc works, jetson-flash.yml
refuses with "no Jetson board in recovery mode" and never reaches the flash task, its check
mode against a stand-in sysfs board and a placeholder BSP tree only shows the command, and
the jetson role's board detection and k3s settings run on the controller. The placeholder
scripts record any execution; the tests assert they never ran. Nothing here flashes.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

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
    for playbook in ("playbooks/jetson-flash.yml", "playbooks/jetson.yml"):
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


def test_flash_without_a_board_refuses_clearly():
    result = run(["ansible-playbook", "-i", "inventories/jetson/hosts.yml", "playbooks/jetson-flash.yml", "-e", "jetson_flash_bsp_dir=/nonexistent"])
    out = flat(result)
    if re.search(r"ID 0955:7[0-6]23|idProduct", out):  # pragma: no cover - a real board is attached
        pytest.skip("a Jetson board in recovery mode is attached to this machine")
    assert result.returncode != 0
    assert "no Jetson board in recovery mode on" in out
    assert "Force Recovery Mode" in out
    assert "TASK [n3x.cluster.jetson_flash : Flash" not in result.stdout
    assert "flashed: true" not in out
    assert "reported success" not in out
    assert "Traceback" not in out
    # any_errors_fatal with serial 1: jetson-2 is never attempted after jetson-1 failed.
    assert "jetson-2" not in result.stdout.split("PLAY RECAP")[0]


def placeholder_bsp(root, marker):
    """A Linux_for_Tegra tree for the preflight; its scripts only record that they ran."""
    for directory in ("bootloader", "kernel", "rootfs/etc", "nv_tegra", "tools/kernel_flash"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    for tool in ("flash.sh", "tools/kernel_flash/l4t_initrd_flash.sh", "tools/l4t_create_default_user.sh"):
        (root / tool).write_text(f'#!/bin/sh\necho "$0 $*" >> {marker}\nexit 1\n')
        (root / tool).chmod(0o755)
    (root / "jetson-orin-nano-devkit.conf").write_text("# placeholder\n")
    (root / "rootfs/etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    return root


def fake_sysfs(root, product):
    entry = root / "1-2"
    entry.mkdir(parents=True)
    for key, value in {"idVendor": "0955", "idProduct": product, "busnum": "1", "devnum": "7", "product": "APX"}.items():
        (entry / key).write_text(value + "\n")
    return root


def flash_check_mode(tmp_path, product):
    marker = tmp_path / "ran"
    bsp = placeholder_bsp(tmp_path / "Linux_for_Tegra", marker)
    sysfs = fake_sysfs(tmp_path / "usb", product)
    extra = {
        "jetson_flash_bsp_dir": str(bsp),
        "jetson_flash_sysfs_root": str(sysfs),
        "jetson_flash_min_free_gib": 0,
        "jetson_flash_ssh_public_keys": [KEY],
        "jetson_flash_become": False,
    }
    result = run(
        ["ansible-playbook", "-i", "inventories/jetson/hosts.yml", "playbooks/jetson-flash.yml", "--check", "--limit", "jetson-1", "-e", json.dumps(extra)]
    )
    return result, marker, bsp


@pytest.mark.skipif(os.geteuid() != 0, reason="the flash preflight refuses without root, as it should")
def test_flash_check_mode_shows_the_command_and_runs_nothing(tmp_path):
    result, marker, bsp = flash_check_mode(tmp_path, "7523")
    out = flat(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check mode: would run ./tools/kernel_flash/l4t_initrd_flash.sh --external-device nvme0n1p1 -c tools/kernel_flash/flash_l4t_t234_nvme.xml -p" in out
    assert "bootloader/generic/cfg/flash_t234_qspi.xml" in out
    assert "--showlogs --network usb0 jetson-orin-nano-devkit internal in " in out
    assert "nothing was flashed" in out
    assert not marker.exists(), marker.read_text()
    assert not (bsp / "rootfs/etc/sudoers.d").exists()


def test_flash_refuses_the_wrong_module(tmp_path):
    result, marker, _bsp = flash_check_mode(tmp_path, "7023")
    out = flat(result)
    assert result.returncode != 0
    assert "wrong module for board config jetson-orin-nano-devkit: found Jetson AGX Orin" in out
    assert not marker.exists()


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
