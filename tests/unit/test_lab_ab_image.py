"""The A/B lab image: GPT disk layout, GRUB's boot-counting config, grubenv, the image spec."""

import json
import shutil
import subprocess
import uuid
import zlib

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_lab_image as img

MIB = 1024 * 1024
PARTS = [("esp", img.GPT_ESP, 32 * MIB), ("rootfs_a", img.GPT_LINUX, 300 * MIB + 5), ("rootfs_b", img.GPT_LINUX, 300 * MIB), ("data", img.GPT_LINUX, 64 * MIB)]


def write_disk(path, parts=PARTS, seed="k"):
    placed, total = img.gpt_layout(parts, seed)
    with open(path, "wb") as fh:
        fh.truncate(total * img.SECTOR)
        for offset, blob in img.gpt_headers(placed, total, seed).items():
            fh.seek(offset)
            fh.write(blob)
    return placed, total


def read_gpt(data, lba):
    header = data[lba * 512 : lba * 512 + 92]
    assert header[:8] == b"EFI PART"
    crc = int.from_bytes(header[16:20], "little")
    assert zlib.crc32(header[:16] + bytes(4) + header[20:]) == crc
    fields = {
        "current": int.from_bytes(header[24:32], "little"),
        "backup": int.from_bytes(header[32:40], "little"),
        "first_usable": int.from_bytes(header[40:48], "little"),
        "last_usable": int.from_bytes(header[48:56], "little"),
        "table": int.from_bytes(header[72:80], "little"),
    }
    table = data[fields["table"] * 512 : fields["table"] * 512 + 128 * 128]
    assert zlib.crc32(table) == int.from_bytes(header[88:92], "little")
    entries = []
    for i in range(128):
        raw = table[i * 128 : (i + 1) * 128]
        if raw[:16] == bytes(16):
            continue
        entries.append(
            {
                "type": str(uuid.UUID(bytes_le=raw[:16])),
                "first": int.from_bytes(raw[32:40], "little"),
                "last": int.from_bytes(raw[40:48], "little"),
                "name": raw[56:128].decode("utf-16-le").rstrip("\0"),
            }
        )
    return fields, entries


def test_gpt_partitions_are_aligned_named_and_sized(tmp_path):
    disk = tmp_path / "disk.img"
    placed, total = write_disk(disk)
    data = disk.read_bytes()
    assert data[510:512] == b"\x55\xaa"
    assert data[450] == 0xEE
    primary, entries = read_gpt(data, 1)
    backup, backup_entries = read_gpt(data, total - 1)
    assert primary["current"] == 1
    assert primary["backup"] == total - 1
    assert backup["current"] == total - 1
    assert backup["backup"] == 1
    assert backup_entries == entries
    assert [e["name"] for e in entries] == ["esp", "rootfs_a", "rootfs_b", "data"]
    assert entries[0]["type"] == img.GPT_ESP
    for entry, (_, _, size) in zip(entries, PARTS, strict=True):
        assert entry["first"] % 2048 == 0
        assert (entry["last"] - entry["first"] + 1) * 512 >= size
        assert primary["first_usable"] <= entry["first"] <= entry["last"] <= primary["last_usable"]
    # rootfs_a (300 MiB + 5 bytes) is rounded up to the next MiB; the slots are what the bundle writes.
    assert (entries[1]["last"] - entries[1]["first"] + 1) * 512 == 301 * MIB
    assert [p["guid"] for p in placed] == [p["guid"] for p in img.gpt_layout(PARTS, "k")[0]]
    assert placed[0]["guid"] != img.gpt_layout(PARTS, "other")[0][0]["guid"]


@pytest.mark.skipif(shutil.which("sfdisk") is None, reason="sfdisk (Debian package fdisk) is not installed")
def test_sfdisk_reads_the_gpt(tmp_path):
    disk = tmp_path / "disk.img"
    write_disk(disk)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True, check=True).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    assert [p["name"] for p in table["partitions"]] == ["esp", "rootfs_a", "rootfs_b", "data"]


def test_copy_sparse_keeps_holes(tmp_path):
    source = tmp_path / "src"
    source.write_bytes(b"\0" * MIB + b"data" + b"\0" * (MIB - 4) + b"\0" * MIB)
    dest = tmp_path / "dest"
    with open(dest, "wb") as fh:
        fh.truncate(8 * MIB)
        img.copy_sparse(str(source), fh, 2 * MIB)
    data = dest.read_bytes()
    assert data[3 * MIB : 3 * MIB + 4] == b"data"
    assert data.count(0) == len(data) - 4
    assert dest.stat().st_blocks * 512 <= 2 * MIB


def test_grub_cfg_counts_boots_and_falls_back():
    cfg = img.ab_grub_cfg("root=LABEL=n3x-root rw console=ttyS0 quiet", attempts=3)
    assert "load_env --file $envfile" in cfg
    assert 'if [ "$upgrade_available" = "1" ]; then' in cfg
    # The bundle's boot_attempts wins; the image's default when grubenv has none.
    assert 'if [ -z "$boot_attempts" ]; then set boot_attempts=3; fi' in cfg
    assert '  if [ "$boot_count" = "$boot_attempts" ]; then set fall_back=1' in cfg
    for n in range(9):
        assert f'"$boot_count" = "{n}" ]; then set boot_count={n + 1}' in cfg
    # The count is checked against the limit before it is raised; anything else falls back.
    assert cfg.index('= "$boot_attempts" ]') < cfg.index('"$boot_count" = "0"')
    assert "  else set fall_back=1" in cfg
    fallback = cfg[cfg.index('if [ "$fall_back" = "1" ]') :]
    for line in ("set rootfs_slot=$rootfs_fallback", "set upgrade_available=0", "set boot_count=0", "set ustate=3"):
        assert line in fallback.split("  fi", maxsplit=1)[0]
    assert "save_env --file $envfile rootfs_slot upgrade_available boot_count ustate" in cfg
    linux = next(line for line in cfg.splitlines() if line.startswith("linux "))
    assert "root=PARTLABEL=rootfs_$rootfs_slot" in linux
    assert "root=LABEL" not in linux
    assert "panic=5" in linux.split()
    # A slot GRUB cannot boot reboots, so the attempt is counted instead of hanging.
    assert cfg.rstrip().endswith("reboot")
    for attempts in (0, 10):
        with pytest.raises(img.ImageError):
            img.ab_grub_cfg("", attempts=attempts)


def test_confirm_script_gates_on_health_and_clears_the_update_markers():
    script = img.confirm_script()
    assert script.startswith("#!/bin/sh\n")
    assert "conf=/etc/n3x/boot-confirm.conf" in script
    assert "timeout='120' interfaces='auto' k3s='auto' check=''" in script
    assert 'grub-editenv "$env" unset ustate recovery_status' in script
    assert 'grub-editenv "$env" set rootfs_slot="$fallback" upgrade_available=0 boot_count=0 ustate=3' in script
    assert "systemctl --no-block reboot" in script
    assert "/var/lib/rancher/k3s/agent/kubelet.kubeconfig get node" in script
    assert img.confirm_script({"timeout": "30"}).count("timeout='30'") == 1
    with pytest.raises(img.ImageError, match="quote"):
        img.confirm_script({"check": "it's"})


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
def test_confirm_script_parses(tmp_path):
    script = tmp_path / "confirm"
    script.write_text(img.confirm_script())
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True, check=False).returncode == 0


def test_watchdog_driver_prefers_the_hardware_one():
    watchdog = {"seconds": 30, "drivers": dict(img.AB_WATCHDOG_DRIVERS)}
    dep = "kernel/drivers/watchdog/softdog.ko: kernel/drivers/watchdog/watchdog.ko\nkernel/drivers/watchdog/watchdog.ko:\n"
    assert img.watchdog_driver(dep, "", watchdog) == ("softdog", True)
    assert img.watchdog_driver(dep + "kernel/drivers/watchdog/i6300esb.ko: kernel/drivers/watchdog/watchdog.ko\n", "", watchdog) == ("i6300esb", True)
    assert img.watchdog_driver("", "kernel/drivers/watchdog/softdog.ko\n", watchdog) == ("softdog", False)
    with pytest.raises(img.ImageError, match="watchdog"):
        img.watchdog_driver("", "", watchdog)


def test_ab_grubenv_records_the_image_both_slots_hold():
    block = img.ab_grubenv(spec(layout="ab"), "ab" * 32).decode()
    assert "rootfs_a_image=" + "ab" * 32 in block
    assert "rootfs_b_image=" + "ab" * 32 in block
    assert "rootfs_a_version=factory" in block
    assert "upgrade_available=0" in block


def test_grubenv_block_is_1024_bytes():
    block = img.grubenv_block({"rootfs_slot": "a", "boot_count": "0"})
    assert len(block) == 1024
    assert block.startswith(b"# GRUB Environment Block\nrootfs_slot=a\nboot_count=0\n#")
    with pytest.raises(img.ImageError):
        img.grubenv_block({"x": "y" * 1100})


def spec(**kw):
    return img.image_spec(["systemd", "linux-image-cloud-amd64"], "ssh-ed25519 AAAA lab", uefi_cmdline="root=LABEL=n3x-root rw", **kw)


def test_single_layout_spec_is_unchanged_by_the_ab_option():
    single = spec()
    assert "layout" not in single
    assert "ab" not in single
    assert single["lab_initrd"]["init"] == img.LAB_INIT
    assert img.cache_key(single) == img.cache_key(spec(layout="single"))


def test_ab_spec():
    ab = spec(layout="ab")
    assert ab["layout"] == "ab"
    assert {"swupdate", "grub-common", "grub-efi-amd64-bin"} <= set(ab["packages"])
    assert "systemd-boot-efi" not in ab["packages"]
    assert ab["uefi"] is False
    assert ab["files"]["/etc/hwrevision"][1] == "n3x-lab 1.0\n"
    assert ab["files"]["/usr/local/sbin/n3x-boot-confirm"][0] == "0755"
    assert "PARTLABEL=esp /boot/efi vfat" in ab["files"]["/etc/fstab"][1]
    assert {"swupdate.service", "swupdate.socket"} <= set(ab["masked_units"])
    assert "n3x-boot-confirm.service" in ab["enabled_units"]
    assert "root=PARTLABEL=" in ab["lab_initrd"]["init"]
    # The initrd arms the watchdog; systemd pets it.
    assert ab["lab_initrd"]["watchdog"] == {"seconds": img.AB_WATCHDOG_SEC, "drivers": img.AB_WATCHDOG_DRIVERS}
    assert "exec 3>/dev/watchdog0; exec 3>&-" in ab["lab_initrd"]["init"]
    assert "RuntimeWatchdogSec=30s" in ab["files"]["/etc/systemd/system.conf.d/10-n3x-watchdog.conf"][1]
    assert "WantedBy=sysinit.target" in ab["files"]["/etc/systemd/system/n3x-boot-confirm.service"][1]
    init = ab["lab_initrd"]["init"] % {"modules": "virtio_blk", "watchdog": "$bb insmod /lib/modules/softdog.ko soft_margin=30", "watchdog_sec": 30}
    assert init.index("soft_margin=30") < init.index("exec 3>/dev/watchdog0") < init.index("switch_root")
    assert ab["ab"]["grubenv"]["rootfs_slot"] == "a"
    assert img.cache_key(ab) != img.cache_key(spec(layout="ab", boot_attempts=2))
    with pytest.raises(img.ImageError, match="layout"):
        spec(layout="abc")


@pytest.mark.parametrize(("size", "expected"), [("64M", 64 * MIB), ("1G", 1024 * MIB), ("5M", 8 * MIB), (str(MIB + 1), 4 * MIB)])
def test_ab_slot_size_rounds_up_to_4_mib(tmp_path, size, expected):
    assert img.ab_slot_size(str(tmp_path), size) == expected


def test_ab_slot_size_auto_leaves_room(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 10 * MIB)
    size = img.ab_slot_size(str(tmp_path), "auto")
    assert size >= 10 * MIB * 1.1 + 96 * MIB
    assert size % (4 * MIB) == 0
    with pytest.raises(img.ImageError):
        img.ab_slot_size(str(tmp_path), "lots")
