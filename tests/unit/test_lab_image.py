"""Lab image cache keys, package lists, the mmdebstrap command line and the lab initrd."""

import json
import os

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_lab_image as img

BASE = ["systemd", "openssh-server", "linux-image-cloud-amd64"]
GROUPS = {"debug": ["less", "vim-tiny"], "test": ["tcpdump", "python3"]}


def spec(**kw):
    args = {"packages": img.flatten_packages(BASE, GROUPS), "ssh_pubkey": "ssh-ed25519 AAAA lab"}
    args.update(kw)
    return img.image_spec(**args)


def test_cache_key_is_stable_and_order_independent():
    a = img.cache_key(spec())
    assert a == img.cache_key(spec(packages=list(reversed(img.flatten_packages(BASE, GROUPS)))))
    assert len(a) == 64
    assert int(a, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"packages": ["systemd"]},
        {"ssh_pubkey": "ssh-ed25519 BBBB other"},
        {"role_version": "9"},
        {"suite": "trixie"},
        {"masked_units": []},
        {"size": "8G"},
        {"uefi_cmdline": "root=/dev/vda"},
        {"extra_files": {"/etc/motd": {"content": "hi", "mode": "0644"}}},
    ],
)
def test_cache_key_changes_with_every_input(change):
    assert img.cache_key(spec(**change)) != img.cache_key(spec())


def test_flatten_packages_selects_groups():
    assert img.flatten_packages(BASE, GROUPS, ["debug"]) == sorted([*BASE, "less", "vim-tiny"])
    with pytest.raises(img.ImageError, match="unknown package groups: nope"):
        img.flatten_packages(BASE, GROUPS, ["nope"])


def test_mmdebstrap_command_line():
    s = spec()
    argv = img.mmdebstrap_argv(s, "/srv/tree")
    assert argv[0] == "mmdebstrap"
    assert argv[-3:] == ["bookworm", "/srv/tree", img.DEFAULT_MIRROR]
    assert "--variant=apt" in argv
    assert "--format=directory" in argv
    include = next(a for a in argv if a.startswith("--include="))
    pkgs = include.split("=", 1)[1].split(",")
    assert set(BASE) <= set(pkgs)
    assert "busybox-static" in pkgs
    assert any(a.startswith("--setup-hook=") and "MODULES=list" in a for a in argv)


def test_uefi_adds_systemd_boot():
    assert "systemd-boot-efi" not in spec()["packages"]
    assert "systemd-boot-efi" in spec(uefi_cmdline="root=/dev/vda")["packages"]


def test_image_is_trimmed_for_boot_speed_and_uses_networkd():
    s = spec()
    for unit in ("networking.service", "e2scrub_reap.service", "apt-daily.timer", "apt-daily-upgrade.timer"):
        assert unit in s["masked_units"]
    assert "systemd-networkd.service" in s["enabled_units"]
    assert s["files"]["/root/.ssh/authorized_keys"] == ["0600", "ssh-ed25519 AAAA lab\n"]


def test_customize_tree_masks_generators_and_blacklists_unused_drivers(tmp_path, monkeypatch):
    monkeypatch.setattr(img, "_run", lambda argv, log: None)  # systemctl --root: not under test
    s = spec()
    img.customize_tree(str(tmp_path), s, None)
    generators = tmp_path / "etc/systemd/system-generators"
    assert sorted(p.name for p in generators.iterdir()) == sorted(img.DEFAULT_MASKED_GENERATORS)
    assert all(os.readlink(p) == "/dev/null" for p in generators.iterdir())
    assert "systemd-fstab-generator" not in img.DEFAULT_MASKED_GENERATORS
    assert "blacklist kvm\n" in (tmp_path / "etc/modprobe.d/n3x-lab.conf").read_text()
    img.customize_tree(str(tmp_path), s, None)  # an existing tree: the links stay


def test_verify_packages_names_the_missing_ones_per_group():
    installed = {"systemd": "252", "openssh-server": "9", "linux-image-cloud-amd64": "6.1", "less": "1"}
    missing = img.verify_packages(installed, GROUPS, BASE)
    assert missing == {"debug": ["vim-tiny"], "test": ["python3", "tcpdump"]}
    assert img.verify_packages(dict.fromkeys([*BASE, "less", "vim-tiny", "tcpdump", "python3"], "1"), GROUPS, BASE) == {}


def test_missing_mmdebstrap_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(img.shutil, "which", lambda _name: None)
    with pytest.raises(img.ImageError, match="apt-get install e2fsprogs mmdebstrap"):
        img.require_tools(["mmdebstrap", "mkfs.ext4"])


def test_lookup_needs_a_complete_image(tmp_path):
    key = "k" * 64
    paths = img.image_paths(str(tmp_path), key)
    assert img.lookup(str(tmp_path), key) is None
    (tmp_path / key).mkdir()
    for name in ("root", "kernel", "initrd", "lab_initrd"):
        with open(paths[name], "w") as fh:
            fh.write("x")
    assert img.lookup(str(tmp_path), key) is None
    with open(paths["manifest"], "w") as fh:
        fh.write(f'{{"key": "{key}"}}')
    assert img.lookup(str(tmp_path), key) == {"key": key}


# The backslash-newline joins the virtio_pci line, as one line in a real modules.dep.
DEP = """kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko \
kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
"""


def test_module_load_order_puts_dependencies_first():
    order = [m.rsplit("/", 1)[1] for m in img.module_load_order(DEP, ["virtio_pci", "virtio_blk"])]
    assert order == [
        "virtio.ko",
        "virtio_ring.ko",
        "virtio_pci_modern_dev.ko",
        "virtio_pci_legacy_dev.ko",
        "virtio_pci.ko",
        "virtio_blk.ko",
    ]
    with pytest.raises(img.ImageError, match="nope"):
        img.module_load_order(DEP, ["nope"])


def test_cpio_newc_layout():
    data = img.cpio_newc([("init", 0o100755, b"#!/bin/sh\n", 0, 0), ("dev/console", 0o20600, b"", 5, 1)])
    assert data.startswith(b"070701")
    assert len(data) % 4 == 0
    assert b"init\0" in data
    assert b"TRAILER!!!\0" in data
    # The console node carries its device numbers (rdevmajor 5, rdevminor 1).
    second = data.index(b"070701", 6)
    fields = data[second + 6 : second + 6 + 13 * 8]
    assert int(fields[9 * 8 : 10 * 8], 16) == 5
    assert int(fields[10 * 8 : 11 * 8], 16) == 1


def test_module_load_order_skips_built_in_modules():
    builtin = "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/net/virtio_net.ko\n"
    order = [m.rsplit("/", 1)[1] for m in img.module_load_order(DEP, ["virtio_pci", "virtio_net", "virtio_blk"], builtin)]
    assert order == ["virtio.ko", "virtio_ring.ko", "virtio_blk.ko"]


def test_foreign_arch_needs_qemu_user_in_binfmt(tmp_path, monkeypatch):
    monkeypatch.setattr(img, "host_arch", lambda: "amd64")
    img.check_foreign_arch("amd64", str(tmp_path))  # native: nothing to check
    with pytest.raises(img.ImageError, match="qemu-user-static"):
        img.check_foreign_arch("arm64", str(tmp_path))
    (tmp_path / "qemu-aarch64").write_text("disabled\n")
    with pytest.raises(img.ImageError, match="qemu-aarch64"):
        img.check_foreign_arch("arm64", str(tmp_path))
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    img.check_foreign_arch("arm64", str(tmp_path))


def test_lab_uefi_is_amd64_only():
    with pytest.raises(img.ImageError, match="amd64"):
        img.image_spec(["systemd"], "ssh-ed25519 AAAA lab", arch="arm64", uefi_cmdline="console=ttyAMA0")


DAY = 86400


def cached_image(cache, key, used_days_ago, now):
    image_dir = cache / key
    image_dir.mkdir(parents=True)
    (image_dir / "manifest.json").write_text(json.dumps({"key": key, "spec": {}}))
    (cache / (key + ".lock")).write_text("")
    img.mark_used(str(cache), key, now=now - used_days_ago * DAY)
    return image_dir


def test_prune_removes_only_images_unused_for_long(tmp_path):
    now = 1_800_000_000
    old, recent, current = "a" * 64, "b" * 64, "c" * 64
    cached_image(tmp_path, old, 40, now)
    cached_image(tmp_path, recent, 3, now)
    cached_image(tmp_path, current, 90, now)
    (tmp_path / "unrelated").mkdir()
    assert img.prune(str(tmp_path), 30, keep={current}, now=now) == [old]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([recent, recent + ".lock", current, current + ".lock", "unrelated"])


def test_prune_keeps_images_a_lab_vm_uses(tmp_path):
    now = 1_800_000_000
    cache, labs = tmp_path / "images", tmp_path / "lab"
    used = cached_image(cache, "d" * 64, 400, now)
    cached_image(cache, "e" * 64, 400, now)
    (labs / "default").mkdir(parents=True)
    (labs / "default/server-1.json").write_text(json.dumps({"root": str(used / "root.img"), "argv": ["-kernel", str(used / "vmlinuz")]}))
    (labs / "default/broken.json").write_text("{not json")
    in_use = img.files_in_use(str(labs))
    assert str(used / "vmlinuz") in in_use
    assert img.prune(str(cache), 30, in_use=in_use, now=now) == ["e" * 64]


def test_an_image_without_a_stamp_ages_from_its_manifest(tmp_path):
    image_dir = tmp_path / ("f" * 64)
    image_dir.mkdir()
    (image_dir / "manifest.json").write_text(json.dumps({"key": "f" * 64, "spec": {}}))
    os.utime(image_dir / "manifest.json", (1_000_000_000, 1_000_000_000))
    assert img.prune(str(tmp_path), 30, now=1_000_000_000 + 29 * DAY) == []
    assert img.prune(str(tmp_path), 30, now=1_000_000_000 + 31 * DAY) == ["f" * 64]


def test_prune_removes_only_directories_that_are_n3x_images(tmp_path):
    now = 1_800_000_000
    cache = tmp_path / "cache"
    image = cached_image(cache, "1" * 64, 400, now)
    not_images = {
        "no manifest": "2" * 64,
        "another key's manifest": "3" * 64,
        "a manifest without a spec": "4" * 64,
        "upper-case hex": "A" * 64,
        "not hex": "g" * 64,
        "a symlink": "5" * 64,
        "a manifest that is a symlink": "6" * 64,
    }
    for name in not_images.values():
        if name != not_images["a symlink"]:
            (cache / name).mkdir()
    (cache / not_images["another key's manifest"] / "manifest.json").write_text(json.dumps({"key": "1" * 64, "spec": {}}))
    (cache / not_images["a manifest without a spec"] / "manifest.json").write_text(json.dumps({"key": "4" * 64}))
    (cache / not_images["upper-case hex"] / "manifest.json").write_text(json.dumps({"key": "A" * 64, "spec": {}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "manifest.json").write_text(json.dumps({"key": "5" * 64, "spec": {}}))
    (cache / not_images["a symlink"]).symlink_to(elsewhere)
    (cache / not_images["a manifest that is a symlink"] / "manifest.json").symlink_to(elsewhere / "manifest.json")
    for name in not_images.values():
        os.utime(cache / name, (now - 400 * DAY, now - 400 * DAY), follow_symlinks=False)
    assert img.prune(str(cache), 30, now=now) == ["1" * 64]
    assert not image.exists()
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == sorted(not_images.values())
    assert (elsewhere / "manifest.json").is_file()


@pytest.mark.parametrize("bad", ["etc/x", "/", "/etc/../../x", "/etc/./x", "//etc/x", "/etc/x/", "/etc/x\n"])
def test_extra_files_must_be_absolute_paths_inside_the_image(bad):
    with pytest.raises(img.ImageError) as caught:
        img.overlay_files("ssh-ed25519 AAAA lab", extra_files={bad: {"content": "x"}})
    assert str(caught.value) == f"extra_files: {bad!r} is not an absolute path inside the image without '..' (like /etc/n3x/ca.pem)"


def test_extra_files_never_leave_the_tree_through_symlinks(tmp_path, monkeypatch):
    monkeypatch.setattr(img, "_run", lambda argv, log: None)  # systemctl --root: not under test
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    (tree / "usr/lib").mkdir(parents=True)
    (tree / "etc").mkdir()
    outside.mkdir()
    (tree / "lib").symlink_to("usr/lib")  # Debian's merged /usr: relative and inside
    (tree / "etc/absolute").symlink_to(outside)  # on the build host this leads out
    (tree / "etc/up").symlink_to("../../../../outside")
    (tree / "etc/resolv.conf").symlink_to(outside / "resolv.conf")
    files = {
        "/lib/n3x/a.conf": {"content": "a\n"},
        "/etc/absolute/b.conf": {"content": "b\n"},
        "/etc/up/c.conf": {"content": "c\n"},
        "/etc/resolv.conf": {"content": "nameserver 192.0.2.1\n"},
    }
    s = spec(extra_files=files)
    s["masked_generators"] = []
    img.customize_tree(str(tree), s, None)
    assert list(outside.iterdir()) == []
    assert (tree / "usr/lib/n3x/a.conf").read_text() == "a\n"
    assert (tree / str(outside).lstrip("/") / "b.conf").read_text() == "b\n"
    assert (tree / "outside/c.conf").read_text() == "c\n"
    assert (tree / str(outside).lstrip("/") / "resolv.conf").read_text() == "nameserver 192.0.2.1\n"


def test_symlink_loops_in_the_tree_are_an_error(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/loop").symlink_to("loop")
    with pytest.raises(img.ImageError, match="too many levels of symbolic links"):
        img.tree_path(str(tmp_path), "/etc/loop/x")


def test_network_variants_are_images_of_their_own_and_leave_the_plain_key_alone():
    plain = spec()
    assert "network_variant" not in plain
    keys = {img.cache_key(plain)}
    for name in img.NETWORK_VARIANTS:
        variant = spec(network_variant=name)
        assert variant["network_variant"] == name
        keys.add(img.cache_key(variant))
        # eth0 stays the lab's networkd file in every variant.
        assert variant["files"]["/etc/systemd/network/10-eth0-mgmt.network"] == plain["files"]["/etc/systemd/network/10-eth0-mgmt.network"]
    assert len(keys) == 1 + len(img.NETWORK_VARIANTS)


@pytest.mark.parametrize(
    ("name", "package", "path", "text"),
    [
        ("netplan", "netplan.io", "/etc/netplan/50-cloud-init.yaml", "        eth1:\n            dhcp4: true\n"),
        ("networkmanager", "network-manager", "/etc/NetworkManager/conf.d/10-lab-eth0.conf", "unmanaged-devices=interface-name:eth0\n"),
        ("ifupdown", "ifupdown", "/etc/network/interfaces", "allow-hotplug eth1\niface eth1 inet dhcp\n"),
    ],
)
def test_each_variant_configures_eth1_as_a_stock_install(name, package, path, text):
    variant = spec(network_variant=name)
    assert package in variant["packages"]
    assert text in variant["files"][path][1]
    # ifupdown's networking.service runs again; the plain image masks it for boot speed.
    assert ("networking.service" in variant["masked_units"]) is (name != "ifupdown")


def test_unknown_network_variant_is_refused():
    with pytest.raises(img.ImageError, match="network_variant must be one of ifupdown, netplan, networkmanager"):
        spec(network_variant="wicked")
