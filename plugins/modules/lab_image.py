#!/usr/bin/python
# Copyright: n3x developers
# MIT License
"""Build or reuse a cached Debian guest image for the QEMU lab."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lab_image
short_description: Build or reuse a cached Debian guest image for the n3x QEMU lab
version_added: 0.1.0
description:
  - Builds a Debian root filesystem from Debian packages with C(mmdebstrap) (no downloaded
    images), customises it (SSH key, systemd-networkd, boot-time trimming), checks that every
    requested package is installed, and writes a raw ext4 image with C(mkfs.ext4 -d)
    (no loop mounts), the kernel and initrd for direct boot, and an ESP image with
    systemd-boot for UEFI boot.
  - The image is stored under O(cache_dir)/KEY where KEY is the sha256 of everything that
    decides its content (packages, customisation, role version); an existing image with the
    same key is reused at once (C(changed) is false).
  - Needs root and the Debian packages C(mmdebstrap), C(e2fsprogs), C(dosfstools) and C(mtools).
  - With O(prune_days), removes the other cached images that no lab has used for that many
    days, keeping every image that a lab VM under O(lab_root) still uses.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - n3x.cluster.attributes
author:
  - n3x developers (!UNKNOWN)
options:
  cache_dir:
    description: Directory holding the cached images.
    type: path
    default: ~/.cache/n3x/images
  prune_days:
    description:
      - Remove other cached images not used (built or reused by this module) for this many
        days; V(0) keeps every image.
    type: int
    default: 0
  lab_root:
    description: Directory of the labs (one directory per lab); the images their VMs use are never pruned.
    type: path
    default: ~/.cache/n3x/lab
  suite:
    description: Debian suite.
    type: str
    default: bookworm
  arch:
    description: Debian architecture.
    type: str
    default: amd64
  mirror:
    description: Debian mirror URL.
    type: str
    default: http://deb.debian.org/debian
  base_packages:
    description: Packages every lab image has.
    type: list
    elements: str
    required: true
  package_groups:
    description: Named package groups (name to list of packages).
    type: dict
    default: {}
  groups:
    description: Which O(package_groups) to install; all when omitted.
    type: list
    elements: str
  ssh_public_key:
    description: OpenSSH public key allowed to log in as root.
    type: str
    required: true
  masked_units:
    description: systemd units to mask; the module's boot-speed list when omitted.
    type: list
    elements: str
  extra_files:
    description: Extra files for the image, path to a dict with C(content) and C(mode).
    type: dict
    default: {}
  network_variant:
    description:
      - A stock network manager that configures the lab NIC C(eth1) the way a fresh install of
        it does, for testing the networkd role's take-over (C(eth0) stays the lab's).
      - V(ifupdown) - C(ifupdown) and C(isc-dhcp-client) with a netinst style
        C(/etc/network/interfaces) (C(allow-hotplug eth1), C(iface eth1 inet dhcp)).
      - V(netplan) - C(netplan.io) with a cloud-init style C(/etc/netplan/50-cloud-init.yaml)
        (dhcp4 on eth0 and eth1, rendered for systemd-networkd).
      - V(networkmanager) - C(network-manager) as Debian ships it; it manages eth1 with its
        auto-created DHCP connection.
      - Empty for the plain lab image. Each variant is an image of its own (its own cache key).
    type: str
    choices: ["", ifupdown, netplan, networkmanager]
    default: ""
  size:
    description:
      - Size of the raw root filesystem (sparse), as C(mkfs.ext4) reads it.
      - With O(layout=ab) also V(auto) - the content plus a tenth and 96 MiB; a bundle
        carries the whole slot, so small slots make small bundles.
    type: str
    default: 4G
  uefi:
    description: Also build an ESP image with systemd-boot so the image can boot with OVMF.
    type: bool
    default: true
  uefi_cmdline:
    description: Kernel command line of the systemd-boot entry; the lab's default when omitted.
    type: str
  layout:
    description:
      - V(single) - C(root.img), a raw ext4 root filesystem (with C(esp.img) when O(uefi)).
      - V(ab) - also C(disk.img), the disk of an edge board updated with A/B images - a GPT
        with the partitions C(esp) (FAT - GRUB as C(EFI/BOOT/BOOTX64.EFI) and its C(grub/grubenv)),
        C(rootfs_a) and C(rootfs_b) (both C(root.img)) and C(data) (empty ext4, room to stage
        an update). GRUB boots the slot of C(rootfs_slot) in grubenv with
        C(root=PARTLABEL=rootfs_<slot>) and counts boot attempts while C(upgrade_available=1);
        after O(boot_attempts) unconfirmed boots it goes back to C(rootfs_fallback). The
        image has C(swupdate) (for C(swupdate -B grub)), C(/etc/hwrevision) C(n3x-lab 1.0) and
        C(n3x-boot-confirm.service), which confirms a booted slot with C(grub-editenv).
        O(uefi) does not apply; O(uefi_cmdline) is GRUB's kernel command line.
    type: str
    choices: [single, ab]
    default: single
  boot_attempts:
    description: With O(layout=ab), how many unconfirmed boots of an updated slot GRUB tries before it rolls back.
    type: int
    default: 3
  role_version:
    description: Version of the calling role; part of the cache key.
    type: str
    default: "0"
  force:
    description: Rebuild even when the cache has the image.
    type: bool
    default: false
notes:
  - Supports check mode (reports whether a build would happen).
"""

EXAMPLES = r"""
- name: Build the lab image
  n3x.cluster.lab_image:
    base_packages: [systemd, systemd-sysv, udev, dbus, openssh-server, python3, linux-image-cloud-amd64, initramfs-tools]
    package_groups:
      debug: [vim-tiny, less]
    ssh_public_key: "{{ lookup('ansible.builtin.file', '~/.cache/n3x/ssh/id_ed25519.pub') }}"
  register: image
"""

RETURN = r"""
key:
  description: Cache key (sha256) of the image.
  returned: always
  type: str
dir:
  description: Directory of the image.
  returned: always
  type: str
root:
  description: Raw ext4 root filesystem image.
  returned: always
  type: str
kernel:
  description: Kernel for direct boot.
  returned: always
  type: str
initrd:
  description: Initrd for direct boot.
  returned: always
  type: str
esp:
  description: ESP image for UEFI boot (only when O(uefi)).
  returned: always
  type: str
disk:
  description: The A/B GPT disk image (only with O(layout=ab)).
  returned: always
  type: str
packages:
  description: Number of installed Debian packages.
  returned: success and not check mode
  type: int
build_seconds:
  description: How long the build took (of the cached image when reused).
  returned: success and not check mode
  type: float
pruned:
  description: Keys of the cached images removed by O(prune_days).
  returned: success and not check mode
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_lab_image as img
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_lab import BASE_CMDLINE


def main():
    module = AnsibleModule(
        argument_spec={
            "cache_dir": {"type": "path", "default": "~/.cache/n3x/images"},
            "suite": {"type": "str", "default": "bookworm"},
            "arch": {"type": "str", "default": "amd64"},
            "mirror": {"type": "str", "default": img.DEFAULT_MIRROR},
            "base_packages": {"type": "list", "elements": "str", "required": True},
            "package_groups": {"type": "dict", "default": {}},
            "groups": {"type": "list", "elements": "str"},
            "ssh_public_key": {"type": "str", "required": True, "no_log": False},
            "masked_units": {"type": "list", "elements": "str"},
            "extra_files": {"type": "dict", "default": {}},
            "network_variant": {"type": "str", "choices": ["", *sorted(img.NETWORK_VARIANTS)], "default": ""},
            "size": {"type": "str", "default": "4G"},
            "uefi": {"type": "bool", "default": True},
            "uefi_cmdline": {"type": "str"},
            "layout": {"type": "str", "choices": ["single", "ab"], "default": "single"},
            "boot_attempts": {"type": "int", "default": 3},
            "role_version": {"type": "str", "default": "0"},
            "force": {"type": "bool", "default": False},
            "prune_days": {"type": "int", "default": 0},
            "lab_root": {"type": "path", "default": "~/.cache/n3x/lab"},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        groups = {k: [str(x) for x in v] for k, v in p["package_groups"].items()}
        selected = p["groups"]
        packages = img.flatten_packages(p["base_packages"], groups, selected)
        chosen = {g: pk for g, pk in groups.items() if selected is None or g in selected}
        spec = img.image_spec(
            packages,
            p["ssh_public_key"],
            suite=p["suite"],
            arch=p["arch"],
            mirror=p["mirror"],
            masked_units=p["masked_units"],
            extra_files=p["extra_files"],
            size=p["size"],
            uefi_cmdline=(p["uefi_cmdline"] or BASE_CMDLINE) if p["uefi"] or p["layout"] == "ab" else None,
            role_version=p["role_version"],
            layout=p["layout"],
            boot_attempts=p["boot_attempts"],
            network_variant=p["network_variant"],
        )
        key = img.cache_key(spec)
        paths = img.image_paths(p["cache_dir"], key)
        result = {
            "key": key,
            "dir": paths["dir"],
            "root": paths["root"],
            "kernel": paths["kernel"],
            "initrd": paths["initrd"],
            "esp": paths["esp"] if p["uefi"] and p["layout"] == "single" else "",
            "disk": paths["disk"] if p["layout"] == "ab" else "",
        }
        cached = None if p["force"] else img.lookup(p["cache_dir"], key)
        if module.check_mode:
            module.exit_json(changed=cached is None, **result)
        manifest, built = img.build(p["cache_dir"], spec, chosen, p["base_packages"], force=p["force"])
        img.mark_used(p["cache_dir"], key)
        pruned = img.prune(p["cache_dir"], p["prune_days"], keep={key}, in_use=img.files_in_use(p["lab_root"])) if p["prune_days"] > 0 else []
    except (img.ImageError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=built or bool(pruned), packages=len(manifest["packages"]), build_seconds=manifest["build_seconds"], pruned=pruned, **result)


if __name__ == "__main__":
    main()
