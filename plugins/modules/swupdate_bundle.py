#!/usr/bin/python
# Copyright: n3x developers
# MIT License
"""Build a signed SWUpdate bundle (.swu) for an A/B root filesystem update."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: swupdate_bundle
short_description: Build a signed SWUpdate A/B bundle (.swu) from root filesystem images
version_added: 0.2.0
description:
  - Writes a SWUpdate bundle to O(dest) - a cpio archive in the C(newc) format with CRC
    (magic C(070702)) holding C(sw-description) first, then its CMS signature
    C(sw-description.sig), then the images. Pure Python apart from C(openssl cms -sign).
  - C(sw-description) lists every image with its sha256, so the single signature covers the
    images too; swupdate refuses an image altered after signing.
  - Each image is written raw to the partition of the slot being updated (O(images[].device)
    with C({slot}) replaced by C(a) or C(b)). It travels zstd-compressed by default
    (C(compressed = "zstd")); C(sha256) in C(sw-description) is that of the artifact in the
    bundle, and a readback script (swupdate's C(readback) handler) then checks the sha256 of
    what was written to the slot. With O(aes_key) the artifact is also AES-CBC encrypted
    (C(encrypted), C(ivt)); the devices decrypt with C(swupdate -K).
  - A delta (O(images[].delta_base)) carries only the zchunk header of the image; the
    device's swupdate (C(delta) handler, chained to C(raw)) reuses the chunks its running
    slot already has and fetches the others from O(delta_url) with HTTP range requests,
    checking each chunk's sha256 before it is written (so a delta has no readback script).
    The C(.zck) file is written to O(delta_dir), which must be served at O(delta_url). A
    preinstall script refuses the delta, before anything is written, unless the running
    slot holds the base image.
  - After a successful install the bundle sets the bootloader variables C(rootfs_slot) to the
    new slot, C(rootfs_fallback) to the old one, C(upgrade_available=1), C(boot_count=0),
    C(boot_attempts), C(rootfs_<slot>_image) (sha256 of the image) and
    C(rootfs_<slot>_version), which the lab image's GRUB uses to boot the new slot and to
    roll back when it is not confirmed. A postinstall script first copies the node's
    identity and configuration (O(preserve)) from the running system into the new slot.
  - The description holds the software collection C(stable) with one mode per slot it
    carries (C(slot_a), C(slot_b)), under each board of O(hardware) with that board's
    C(hardware-compatibility) revisions. Install it on a device with
    C(swupdate -e stable,slot_<inactive slot> -i bundle.swu -k cert.pem); RV(selections) gives
    those arguments. swupdate refuses the bundle on a board or revision it does not list.
  - Idempotent - the archive's mtimes, inode numbers and owners are fixed and the signature
    carries no signing time, so the same inputs and an RSA key give the same bytes, and
    O(dest) is replaced (atomically) only when they differ.
  - Runs where the images and the key are, normally the controller (with C(delegate_to=localhost)).
    The key file must have mode C(0600); only its path is passed on, never its content.
options:
  dest:
    description: Path of the bundle to write. Its directory must exist.
    type: path
    required: true
  images:
    description: The images, written in this order; usually one root filesystem image.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: The image file (for example an ext4 image made with C(mkfs.ext4 -d)).
        type: path
        required: true
      name:
        description: Its name inside the bundle; the file name of O(images[].path) by default.
        type: str
      device:
        description:
          - The partition it is written to on the device; C({slot}) becomes C(a) or C(b).
        type: str
        default: /dev/disk/by-partlabel/rootfs_{slot}
      delta_base:
        description:
          - Make a delta against this image, the one the devices run (their running slot was
            written from it). Needs O(delta_url) and O(delta_dir); cannot be encrypted.
        type: path
  version:
    description: The software version recorded in C(sw-description).
    type: str
    required: true
  description:
    description: A free-text description recorded in C(sw-description).
    type: str
  hardware:
    description:
      - The compatible hardware as C(board:revision), the syntax of C(swupdate -H) and of
        C(/etc/hwrevision) (C(board revision)) on the device. Boards start with a letter and
        hold letters, digits, C(-) and C(_).
    type: list
    elements: str
    required: true
  slot:
    description:
      - The slots the bundle can install to. V(both) (one bundle for a whole fleet, each node
        choosing its inactive slot with C(-e)), V(a), V(b), or V(inactive) (the slot other
        than O(active_slot)).
    type: str
    choices: [both, a, b, inactive]
    default: both
  active_slot:
    description: The slot the device runs from; required with O(slot=inactive) and refused with any other O(slot).
    type: str
    choices: [a, b]
  signing_key:
    description: PEM private key that signs C(sw-description); mode C(0600) or stricter.
    type: path
  signing_cert:
    description: PEM certificate of O(signing_key); the devices verify bundles with it (C(swupdate -k)).
    type: path
  allow_unsigned:
    description:
      - Build a bundle without C(sw-description.sig) when no key is given. Debian's swupdate
        refuses such bundles; this exists for negative tests.
    type: bool
    default: false
  mode:
    description: Octal mode of the bundle file.
    type: str
    default: "0644"
  compression:
    description: How images travel in the bundle; deltas are always zchunk (zstd chunks).
    type: str
    choices: [zstd, none]
    default: zstd
  compression_level:
    description: zstd level, 1 to 19 (9 is the knee for the lab's root filesystem; see the README).
    type: int
    default: 9
  work_dir:
    description:
      - Directory that keeps the compressed, encrypted and chunked images, named by the
        image's sha256, so that rebuilding a bundle for the same image reuses them. A
        temporary directory when omitted. Safe to delete.
    type: path
  aes_key:
    description:
      - Encrypt the images with this AES key file (C(<key hex> <iv hex>), mode C(0600); the
        file the devices pass to C(swupdate -K)). Only its path is passed on; the IV of each
        image is derived from the key and the image, so the bundle stays reproducible.
    type: path
  delta_url:
    description: URL of the directory that serves O(delta_dir) (with HTTP range requests), for deltas.
    type: str
  delta_dir:
    description: Directory the C(.zck) file of each delta image is written to, served at O(delta_url).
    type: path
  preserve:
    description:
      - Paths (absolute, a trailing glob allowed) the bundle's postinstall script copies from
        the running system into the updated slot - the node's identity and configuration. An
        empty list copies nothing.
    type: list
    elements: str
    default: [/etc/hostname, /etc/hosts, /etc/machine-id, /etc/ssh/ssh_host_*, /etc/systemd/network, /etc/rancher, /etc/n3x,
              /etc/modules-load.d/n3x-*.conf, /etc/sysctl.d/90-n3x-*.conf, /etc/iscsi/initiatorname.iscsi, /etc/swupdate/aes.key]
  boot_attempts:
    description: Unconfirmed boots of the new slot GRUB allows before it goes back to the old one (1 to 9).
    type: int
    default: 3
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - n3x.cluster.attributes
requirements:
  - openssl on the host that runs the module (for signing).
  - zstd (compressed images), zck and zck_read_header from zchunk (deltas), the Python package cryptography (encrypted images).
notes:
  - The devices need swupdate with the GRUB bootloader interface (C(swupdate -B grub)), the
    signing certificate and C(/etc/hwrevision) (or C(-H board:revision)).
seealso:
  - name: SWUpdate sw-description syntax
    description: The description format this module writes.
    link: https://sbabic.github.io/swupdate/sw-description.html
author:
  - n3x developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Build the fleet bundle on the controller
  n3x.cluster.swupdate_bundle:
    dest: "{{ playbook_dir }}/../out/rootfs-1.4.0.swu"
    version: 1.4.0
    hardware: ["n3x-lab:1.0"]
    images:
      - path: "{{ playbook_dir }}/../out/rootfs.ext4"
    signing_key: ~/.local/share/n3x/swupdate-keys/swupdate.key
    signing_cert: ~/.local/share/n3x/swupdate-keys/swupdate.crt
    work_dir: ~/.cache/n3x/swupdate-artifacts
  delegate_to: localhost
  run_once: true
  register: bundle

- name: A delta for nodes that run rootfs-1.3.0.ext4; the update server serves /srv/ota
  n3x.cluster.swupdate_bundle:
    dest: /srv/ota/rootfs-1.4.0-delta.swu
    version: 1.4.0
    hardware: ["n3x-lab:1.0"]
    images:
      - path: /srv/images/rootfs-1.4.0.ext4
        name: rootfs.ext4
        delta_base: /srv/images/rootfs-1.3.0.ext4
    delta_url: http://updates.example.net/ota
    delta_dir: /srv/ota
    signing_key: /etc/n3x/swupdate.key
    signing_cert: /etc/n3x/swupdate.crt
  delegate_to: localhost

- name: Encrypted images (the devices hold the same key in /etc/swupdate/aes.key)
  n3x.cluster.swupdate_bundle:
    dest: /srv/ota/rootfs-1.4.0-enc.swu
    version: 1.4.0
    hardware: ["n3x-lab:1.0"]
    images: [{path: /srv/images/rootfs-1.4.0.ext4, name: rootfs.ext4}]
    aes_key: /etc/n3x/swupdate-aes.key
    signing_key: /etc/n3x/swupdate.key
    signing_cert: /etc/n3x/swupdate.crt
  delegate_to: localhost

- name: Install it to the inactive slot
  ansible.builtin.command:
    argv: [swupdate, -B, grub, -k, /etc/swupdate/swupdate.crt, -e, "{{ bundle.selections[inactive] }}", -i, /var/tmp/update.swu]
  vars:
    # n3x_active_slot: rootfs_slot from grub-editenv list on the node
    inactive: "{{ 'b' if n3x_active_slot == 'a' else 'a' }}"
  changed_when: true

- name: A bundle for slot b only, for a node that runs from slot a
  n3x.cluster.swupdate_bundle:
    dest: /srv/ota/node-1.swu
    version: 1.4.0
    hardware: ["n3x-lab:1.0", "n100:2.1"]
    images: [{path: /srv/images/rootfs.ext4, name: rootfs.ext4}]
    slot: inactive
    active_slot: a
    signing_key: /etc/n3x/swupdate.key
    signing_cert: /etc/n3x/swupdate.crt
  delegate_to: localhost
"""

RETURN = r"""
sha256:
  description: sha256 of the bundle.
  returned: always
  type: str
size:
  description: Size of the bundle in bytes.
  returned: always
  type: int
slots:
  description: The slots the bundle can install to.
  returned: always
  type: list
  elements: str
  sample: [a, b]
selections:
  description: For each slot the bundle carries, the argument of C(swupdate -e) that installs to it.
  returned: always
  type: dict
  sample: {"a": "stable,slot_a", "b": "stable,slot_b"}
members:
  description: The archive's members in order.
  returned: always
  type: list
  elements: str
  sample: [sw-description, sw-description.sig, rootfs.ext4]
signed:
  description: Whether the bundle carries sw-description.sig.
  returned: always
  type: bool
sw_description:
  description: The text of sw-description.
  returned: always
  type: str
ratio:
  description: Bundle bytes per byte written to the slots (0.2 - a bundle a fifth of the image).
  returned: always
  type: float
images:
  description:
    - Per image - name, member (its name in the bundle), size (of the artifact in the bundle),
      written_size and written_sha256 (of the image itself), compressed, encrypted and, for a
      delta, delta with url, base_sha256, zck (path of the served file), zck_size,
      header_size and chunks.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_swupdate import (
    COMPRESSIONS,
    DEFAULT_BOOT_ATTEMPTS,
    DEFAULT_COMPRESSION_LEVEL,
    DEFAULT_PRESERVE,
    SwupdateError,
    build_bundle,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "dest": {"type": "path", "required": True},
            "images": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "path": {"type": "path", "required": True},
                    "name": {"type": "str"},
                    "device": {"type": "str", "default": "/dev/disk/by-partlabel/rootfs_{slot}"},
                    "delta_base": {"type": "path"},
                },
            },
            "version": {"type": "str", "required": True},
            "description": {"type": "str"},
            "hardware": {"type": "list", "elements": "str", "required": True},
            "slot": {"type": "str", "choices": ["both", "a", "b", "inactive"], "default": "both"},
            "active_slot": {"type": "str", "choices": ["a", "b"]},
            "signing_key": {"type": "path", "no_log": False},
            "signing_cert": {"type": "path"},
            "allow_unsigned": {"type": "bool", "default": False},
            "mode": {"type": "str", "default": "0644"},
            "compression": {"type": "str", "choices": list(COMPRESSIONS), "default": "zstd"},
            "compression_level": {"type": "int", "default": DEFAULT_COMPRESSION_LEVEL},
            "work_dir": {"type": "path"},
            "aes_key": {"type": "path", "no_log": False},
            "delta_url": {"type": "str"},
            "delta_dir": {"type": "path"},
            "preserve": {"type": "list", "elements": "str", "default": list(DEFAULT_PRESERVE)},
            "boot_attempts": {"type": "int", "default": DEFAULT_BOOT_ATTEMPTS},
        },
        required_together=[("signing_key", "signing_cert"), ("delta_url", "delta_dir")],
        required_if=[("slot", "inactive", ("active_slot",))],
        supports_check_mode=True,
    )
    params = module.params
    if not params["signing_key"] and not params["allow_unsigned"]:
        module.fail_json(msg="signing_key and signing_cert are required (swupdate refuses unsigned bundles); set allow_unsigned=true for a negative test")
    try:
        mode = int(params["mode"], 8)
    except ValueError:
        module.fail_json(msg=f"mode: {params['mode']!r} is not an octal mode")
    for image in params["images"]:
        for optional in ("name", "delta_base"):
            if not image.get(optional):
                image.pop(optional, None)
    try:
        result = build_bundle(
            params["dest"],
            params["version"],
            params["hardware"],
            params["images"],
            slot=params["slot"],
            active_slot=params["active_slot"],
            key=params["signing_key"],
            cert=params["signing_cert"],
            description=params["description"],
            check_mode=module.check_mode,
            mode=mode,
            compression=params["compression"],
            level=params["compression_level"],
            work_dir=params["work_dir"],
            aes_key=params["aes_key"],
            delta_url=params["delta_url"],
            delta_dir=params["delta_dir"],
            preserve=params["preserve"],
            boot_attempts=params["boot_attempts"],
        )
    except (SwupdateError, OSError) as exc:
        module.fail_json(msg=f"{params['dest']}: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
