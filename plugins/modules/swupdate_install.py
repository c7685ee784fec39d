#!/usr/bin/python
# Copyright: n3x developers
# MIT License
"""Install a SWUpdate bundle to the inactive A/B slot of the device it runs on."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: swupdate_install
short_description: Install a SWUpdate A/B bundle to the inactive slot of this device
version_added: 0.2.0
description:
  - Runs the device's own C(swupdate) on a bundle file (C(swupdate -i)) or an HTTP(S) URL
    (C(swupdate -d "-u URL")), with the GRUB bootloader interface (C(-B grub)), so that the
    bundle's image is written to the partition of one slot and the bundle sets C(rootfs_slot),
    C(rootfs_fallback), C(upgrade_available=1) and C(boot_count=0) in grubenv. The device boots
    the new slot at its next reboot; see M(n3x.cluster.swupdate_bundle) for the bundle.
  - With O(slot=inactive) the slot is the one the device is not running from, read from
    C(root=PARTLABEL=rootfs_<slot>) in C(/proc/cmdline) (the running system, not grubenv,
    which may already name the other slot after an earlier install).
  - swupdate verifies the bundle's CMS signature with O(public_key), every image's sha256
    and the hardware compatibility (C(/etc/hwrevision) or O(hardware)); a bundle that fails
    any check fails this task and nothing is written. After writing, the bundle's readback
    script compares the slot with the sha256 of the image (what was written).
  - A delta bundle (M(n3x.cluster.swupdate_bundle) with O(n3x.cluster.swupdate_bundle#module:images[].delta_base))
    rebuilds the slot from the chunks of the running slot plus the chunks it lacks, fetched
    with HTTP range requests. A bundle file whose delta was made against another image than
    the one the running slot holds (C(rootfs_<slot>_image) in grubenv) is refused before
    swupdate starts; the bundle's own preinstall script refuses it too, before any image is
    written (for O(url) and for swupdate run by hand).
  - swupdate 2022.12 (Debian bookworm) has a start-up race in C(-i) - its client may read
    the installer's IDLE state, log success, exit 1 and end the install it started. Such a
    run proves nothing, so it is run again (up to O(attempts) runs); every run is a complete
    install from the start.
  - Always C(changed) when the install runs. In check mode a bundle file is only checked
    (C(swupdate -c)) - signature, hashes and hardware, nothing written.
options:
  bundle:
    description: Path of the bundle on the device. Exactly one of O(bundle) and O(url).
    type: path
  url:
    description: HTTP(S) URL swupdate downloads the bundle from, streaming (nothing stored first).
    type: str
  slot:
    description: Slot to install to; V(inactive) is the one the device does not run from.
    type: str
    choices: [inactive, a, b]
    default: inactive
  public_key:
    description: Certificate that bundles must be signed with (C(swupdate -k)).
    type: path
    default: /etc/swupdate/swupdate.crt
  hardware:
    description: Hardware as C(board:revision) (C(swupdate -H)); C(/etc/hwrevision) when omitted.
    type: str
  bootloader:
    description: swupdate's bootloader interface (C(-B)).
    type: str
    default: grub
  aes_key:
    description:
      - Key file that decrypts encrypted images (C(swupdate -K)) - C(<key hex> <iv hex>), mode
        C(0600). Only its path reaches swupdate's command line.
    type: path
  grubenv:
    description: The GRUB environment the device boots with, read for the delta base check.
    type: path
    default: /boot/grub/grubenv
  health_check:
    description:
      - The health check the updated slot must pass before it confirms itself (the A/B
        image's C(n3x-boot-confirm)), written to C(/etc/n3x/boot-confirm.conf) before the
        install; bundles carry that file into the new slot. Omitted - the file stays as it is.
    type: dict
    suboptions:
      timeout:
        description: Seconds the new slot has to become healthy; then it goes back to the old slot.
        type: int
        default: 120
      interfaces:
        description:
          - Interfaces systemd-networkd must have configured - C(auto) (every C(Name=) of the
            node's networkd units), C(none), or a list of names.
        type: raw
        default: auto
      k3s:
        description: Whether the k3s node must be Ready - C(auto) (where k3s is enabled), C(yes) or C(no).
        type: str
        choices: [auto, "yes", "no"]
        default: auto
      command:
        description: A shell command of your own that must succeed too.
        type: str
        default: ""
  tmpdir:
    description:
      - Directory for swupdate's sockets and its copy of each image (C(TMPDIR)); created
        when missing. swupdate verifies an image there before it writes the slot, so it
        needs room for the largest image - the A/B lab image's data partition has it.
    type: path
    default: /data/swupdate
  attempts:
    description: Runs at most when swupdate's start-up race interrupts a run.
    type: int
    default: 5
  timeout:
    description: Seconds one swupdate run may take.
    type: int
    default: 1800
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - n3x.cluster.attributes
attributes:
  check_mode:
    support: partial
    details: A bundle file is checked with C(swupdate -c); an O(url) is not contacted.
requirements:
  - swupdate (Debian package C(swupdate)) with the GRUB bootloader interface on the device.
notes:
  - Reboot afterwards to boot the new slot; the new system confirms itself (the A/B lab
    image's C(n3x-boot-confirm.service) clears C(upgrade_available)), otherwise GRUB goes
    back to the previous slot after a few boots. C(playbooks/ota.yml) does all of it.
seealso:
  - module: n3x.cluster.swupdate_bundle
author:
  - n3x developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Install the pushed bundle to the inactive slot
  n3x.cluster.swupdate_install:
    bundle: /data/update.swu
  register: install

- name: Install straight from the update server
  n3x.cluster.swupdate_install:
    url: http://updates.example.net/rootfs-1.4.0.swu

- name: Only check a bundle (signature, hashes, hardware)
  n3x.cluster.swupdate_install:
    bundle: /data/update.swu
  check_mode: true
"""

RETURN = r"""
outcome:
  description:
    - C(successful), C(failed), C(interrupted) (swupdate's start-up race struck every run) or
      C(refused) (checked before swupdate ran - a delta for another base, an unreadable key;
      nothing was written).
  returned: always
  type: str
  sample: successful
slot:
  description: The slot the bundle was installed to.
  returned: always
  type: str
  sample: b
active_slot:
  description: The slot the device runs from.
  returned: always
  type: str
  sample: a
version:
  description: The version the bundle's C(sw-description) gives (bundle files only).
  returned: when a bundle file was given
  type: str
  sample: 2.0.0
delta_base:
  description: For a delta, the sha256 of the image it was made against (and that the running slot holds).
  returned: when the bundle file is a delta
  type: str
selection:
  description: The C(swupdate -e) argument used.
  returned: always
  type: str
  sample: stable,slot_b
health_check_changed:
  description: Whether O(health_check) changed C(/etc/n3x/boot-confirm.conf).
  returned: when O(health_check) is given and not in check mode
  type: bool
runs:
  description: How many times swupdate ran (more than 1 when its start-up race struck).
  returned: when swupdate ran
  type: int
cmd:
  description: The swupdate command line.
  returned: always
  type: list
  elements: str
log:
  description: swupdate's output of the last run.
  returned: when swupdate ran
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_swupdate as swu


def main():
    module = AnsibleModule(
        argument_spec={
            "bundle": {"type": "path"},
            "url": {"type": "str"},
            "slot": {"type": "str", "choices": ["inactive", "a", "b"], "default": "inactive"},
            "public_key": {"type": "path", "default": swu.DEFAULT_PUBLIC_KEY, "no_log": False},
            "hardware": {"type": "str"},
            "bootloader": {"type": "str", "default": "grub"},
            "aes_key": {"type": "path", "no_log": False},
            "grubenv": {"type": "path", "default": "/boot/grub/grubenv"},
            "health_check": {
                "type": "dict",
                "options": {
                    "timeout": {"type": "int", "default": 120},
                    "interfaces": {"type": "raw", "default": "auto"},
                    "k3s": {"type": "str", "choices": ["auto", "yes", "no"], "default": "auto"},
                    "command": {"type": "str", "default": ""},
                },
            },
            "tmpdir": {"type": "path", "default": swu.DEFAULT_TMPDIR},
            "attempts": {"type": "int", "default": 5},
            "timeout": {"type": "int", "default": 1800},
        },
        required_one_of=[("bundle", "url")],
        mutually_exclusive=[("bundle", "url")],
        supports_check_mode=True,
    )
    p = module.params
    swupdate = module.get_bin_path("swupdate", required=True)
    try:
        with open("/proc/cmdline") as handle:
            active = swu.running_slot(handle.read())
        slot = swu.inactive_slot(active) if p["slot"] == "inactive" else p["slot"]
        selection = swu.selection(slot)
        check = module.check_mode
        argv = swu.install_argv(
            selection,
            p["public_key"],
            bundle=p["bundle"],
            url=p["url"],
            bootloader=p["bootloader"],
            hardware=p["hardware"],
            check=check and bool(p["bundle"]),
            swupdate=swupdate,
            aes_key=p["aes_key"],
        )
    except swu.SwupdateError as exc:
        module.fail_json(msg=str(exc))
    result = {"changed": True, "slot": slot, "active_slot": active, "selection": selection, "cmd": argv}
    if slot == active:
        module.fail_json(msg=f"slot {slot} is the running system's; install to the inactive slot", outcome="failed", **result)
    if p["bundle"] and not os.path.isfile(p["bundle"]):
        module.fail_json(msg=f"bundle {p['bundle']} not found", outcome="failed", **result)
    try:
        if p["aes_key"]:
            swu.check_private_key(p["aes_key"], "AES key")
        if p["bundle"]:
            text = swu.bundle_description(p["bundle"])
            result["version"] = swu.bundle_version(text)
            if swu.delta_bases(text):
                with open(p["grubenv"], errors="replace") as handle:
                    grubenv = swu.parse_grubenv(handle.read(4096))
                # The delta's source is the slot the node runs (the other one).
                result["delta_base"] = swu.check_delta_base(text, grubenv, swu.inactive_slot(slot))
        confirm = None
        if p["health_check"]:
            confirm = swu.confirm_config(**p["health_check"])
    except (swu.SwupdateError, OSError) as exc:
        module.fail_json(msg=str(exc), outcome="refused", **result)
    if confirm and not check:
        result["health_check_changed"] = swu.write_confirm_config(confirm)
    if check and p["url"]:
        module.exit_json(outcome="skipped", **result)
    os.makedirs(p["tmpdir"], mode=0o700, exist_ok=True)
    env = {**os.environ, "TMPDIR": p["tmpdir"]}
    outcome, log, runs = swu.run_install(argv, attempts=p["attempts"], timeout=p["timeout"], env=env)
    result.update(outcome=outcome, runs=runs, log=log, changed=not check)
    if outcome != "successful":
        lines = [line for line in log.splitlines() if "[ERROR]" in line] or log.splitlines()[-5:]
        module.fail_json(msg="swupdate {} ({} runs): {}".format(outcome, runs, " | ".join(lines[:6])), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
