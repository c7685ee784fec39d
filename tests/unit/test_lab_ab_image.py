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
    for n in range(3):
        assert f'"$boot_count" = "{n}" ]; then set boot_count={n + 1}' in cfg
    assert '"$boot_count" = "3"' not in cfg
    assert "set rootfs_slot=$rootfs_fallback" in cfg
    assert "save_env --file $envfile rootfs_slot upgrade_available boot_count" in cfg
    linux = next(line for line in cfg.splitlines() if line.startswith("linux "))
    assert "root=PARTLABEL=rootfs_$rootfs_slot" in linux
    assert "root=LABEL" not in linux
    assert "panic=5" in linux.split()
    # A slot GRUB cannot boot reboots, so the attempt is counted instead of hanging.
    assert cfg.rstrip().endswith("reboot")
    with pytest.raises(img.ImageError):
        img.ab_grub_cfg("", attempts=0)


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
