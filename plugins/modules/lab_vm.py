#!/usr/bin/python
# Copyright: n3x developers
# MIT License
"""Start, stop or remove one QEMU lab VM."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lab_vm
short_description: Start, stop or remove a QEMU VM of the n3x lab
version_added: 0.1.0
description:
  - Runs one VM of the n3x QEMU lab from an image built by M(n3x.cluster.lab_image), on a
    qcow2 overlay of its own. All of the VM's files live in O(lab_dir) (overlay, QMP socket,
    serial log, pidfile, state).
  - eth0 is the management NIC (QEMU user-mode networking, SSH forwarded from
    C(127.0.0.1:PORT)); eth1, eth2... are the lab NICs of O(nics), each on a lab segment
    (a loopback multicast hub shared by all VMs of the lab directory).
  - Idempotent. A running VM with the same definition is left alone (C(changed) is false);
    a running VM with another definition is restarted. A stale pidfile or a dead VM is
    cleaned up. A failed start leaves no QEMU process behind.
  - With O(accel=auto), KVM is used only when a real short boot under KVM prints the
    kernel banner (the result is cached until the host reboots); otherwise TCG.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - n3x.cluster.attributes
author:
  - n3x developers (!UNKNOWN)
options:
  name:
    description:
      - VM (and guest host) name, a hostname (lower-case letters, digits and C(-)); it also
        names the VM's files in O(lab_dir).
    type: str
    required: true
  state:
    description: C(started), C(stopped) (QEMU ended, disk kept) or C(absent) (files removed too).
    type: str
    choices: [started, stopped, absent]
    default: started
  lab_dir:
    description: Directory of the lab's runtime files.
    type: path
    default: ~/.cache/n3x/lab/default
  image_dir:
    description: Image directory returned by M(n3x.cluster.lab_image) (RV(n3x.cluster.lab_image#module:dir)).
    type: path
  boot_mode:
    description:
      - C(direct) (QEMU loads the kernel and initrd), C(uefi) (OVMF, systemd-boot from the ESP disk)
        or C(disk) (OVMF boots the bootloader on the image's own GPT disk C(disk.img), the GRUB
        of an A/B image; see M(n3x.cluster.lab_image) O(n3x.cluster.lab_image#module:layout)).
      - With C(disk) the kernel command line is the image's (GRUB's); O(append) is not used.
    type: str
    choices: [direct, uefi, disk]
    default: direct
  accel:
    description: C(auto) probes KVM with a real boot and falls back to TCG.
    type: str
    choices: [auto, kvm, tcg]
    default: auto
  memory:
    description: Guest RAM in MiB.
    type: int
    default: 512
  smp:
    description: Number of vCPUs.
    type: int
    default: 2
  nics:
    description:
      - Lab NICs, C(eth1), C(eth2)... in order; a name or a dict with C(name), C(segment)
        and C(mac). Bond members go on the same segment (the default segment C(lab)).
    type: list
    elements: raw
    default: []
  mac:
    description: MAC address of the first lab NIC (for example a profile's C(mac_addresses) entry).
    type: str
  append:
    description: Extra kernel arguments (direct boot).
    type: str
    default: ""
  data_disk:
    description:
      - Size (C(512M), C(2G)) of an empty second disk, the guest's
        C(/dev/disk/by-id/virtio-n3x-data); kept across restarts, removed with the VM.
      - Empty for none.
    type: str
    default: ""
  ssh_port:
    description: Preferred forwarded SSH port; a free one is chosen when omitted or taken.
    type: int
  wait_ssh:
    description: Wait until the guest's SSH server answers.
    type: bool
    default: false
  wait_timeout:
    description: Seconds to wait for SSH.
    type: int
    default: 180
  accel_cache:
    description: File caching the KVM probe result for this host boot.
    type: path
    default: ~/.cache/n3x/accel-probe.json
  probe_timeout:
    description: Seconds the KVM probe boot may take to print the kernel banner.
    type: int
    default: 10
  ovmf_code:
    description: OVMF firmware; found in the Debian package C(ovmf) when omitted.
    type: path
  ovmf_vars:
    description: OVMF variable store template; found in the Debian package C(ovmf) when omitted.
    type: path
notes:
  - Needs the Debian packages C(qemu-system-x86) and C(qemu-utils), and C(ovmf) for UEFI.
  - Supports check mode.
"""

EXAMPLES = r"""
- name: Start server-1 with a bond of two lab NICs
  n3x.cluster.lab_vm:
    name: server-1
    image_dir: "{{ image.dir }}"
    nics: [eth1, eth2]
    wait_ssh: true
  register: vm

- name: Remove it
  n3x.cluster.lab_vm:
    name: server-1
    state: absent
"""

RETURN = r"""
ssh_host:
  description: Address to reach the VM's SSH on.
  returned: state is started
  type: str
  sample: 127.0.0.1
ssh_port:
  description: Forwarded SSH port.
  returned: state is started
  type: int
pid:
  description: PID of the QEMU process.
  returned: state is started and not check mode
  type: int
accel:
  description: Acceleration in use (kvm or tcg).
  returned: state is started and not check mode
  type: str
accel_reason:
  description: Why this acceleration was chosen (the KVM probe's result).
  returned: when the VM was started by this task
  type: str
replaced_disks:
  description: >-
    Why the VM's disks were made anew instead of reused: its last QEMU was killed (or
    crashed), so its qcow2 files may be half written.
  returned: when the VM was started by this task and its disks were replaced
  type: str
ssh_seconds:
  description: Seconds from this task's wait until SSH answered.
  returned: when O(wait_ssh)
  type: float
serial_log:
  description: Serial console log of the VM.
  returned: always
  type: str
qmp:
  description: QMP socket of the VM.
  returned: always
  type: str
argv:
  description: QEMU command line.
  returned: state is started and not check mode
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_lab as lab


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["started", "stopped", "absent"], "default": "started"},
            "lab_dir": {"type": "path", "default": "~/.cache/n3x/lab/default"},
            "image_dir": {"type": "path"},
            "boot_mode": {"type": "str", "choices": ["direct", "uefi", "disk"], "default": "direct"},
            "accel": {"type": "str", "choices": ["auto", "kvm", "tcg"], "default": "auto"},
            "memory": {"type": "int", "default": 512},
            "smp": {"type": "int", "default": 2},
            "nics": {"type": "list", "elements": "raw", "default": []},
            "mac": {"type": "str"},
            "append": {"type": "str", "default": ""},
            "data_disk": {"type": "str", "default": ""},
            "ssh_port": {"type": "int"},
            "wait_ssh": {"type": "bool", "default": False},
            "wait_timeout": {"type": "int", "default": 180},
            "accel_cache": {"type": "path", "default": "~/.cache/n3x/accel-probe.json"},
            "probe_timeout": {"type": "int", "default": 10},
            "ovmf_code": {"type": "path"},
            "ovmf_vars": {"type": "path"},
        },
        required_if=[("state", "started", ["image_dir"])],
        supports_check_mode=True,
    )
    p = module.params
    try:
        paths = lab.vm_paths(p["lab_dir"], p["name"])
    except lab.LabError as exc:
        module.fail_json(msg=str(exc))
    result = {"name": p["name"], "serial_log": paths["serial"], "qmp": paths["qmp"], "lab_dir": paths["dir"]}
    try:
        if p["state"] != "started":
            running = lab.running_pid(paths) is not None
            exists = lab.has_files(paths)
            changed = running or (p["state"] == "absent" and exists)
            if not module.check_mode:
                if p["state"] == "absent":
                    lab.remove(paths)
                else:
                    lab.stop(paths)
            module.exit_json(changed=changed, **result)

        image = p["image_dir"]
        arch = lab.image_arch(image)
        vm = lab.vm_definition(
            p["name"],
            p["lab_dir"],
            # An A/B image boots from its whole GPT disk; root.img is then the slot filesystem.
            os.path.join(image, "disk.img" if p["boot_mode"] == "disk" else "root.img"),
            kernel=os.path.join(image, "vmlinuz"),
            # The image's small lab initrd boots ~5 s faster than initramfs-tools' one.
            initrd=next(
                (os.path.join(image, n) for n in ("initrd-lab.img", "initrd.img") if os.path.exists(os.path.join(image, n))),
                os.path.join(image, "initrd.img"),
            ),
            esp=os.path.join(image, "esp.img"),
            boot_mode=p["boot_mode"],
            accel=p["accel"],
            memory=p["memory"],
            smp=p["smp"],
            nics=p["nics"],
            mac=p["mac"],
            append=p["append"],
            ovmf_code=p["ovmf_code"],
            ovmf_vars=p["ovmf_vars"],
            arch=arch,
            data_disk=p["data_disk"],
        )
        pid, same, state = lab.status(vm)
        changed = not (pid and same)
        if module.check_mode:
            module.exit_json(changed=changed, ssh_host="127.0.0.1", ssh_port=state.get("ssh_port") or 0, **result)
        if changed:
            if pid:
                lab.stop(paths)
            accel, reason = lab.resolve_accel(p["accel"], os.path.join(image, "vmlinuz"), p["accel_cache"], p["probe_timeout"], arch=arch)
            state = lab.start(vm, accel, ssh_port=p["ssh_port"])
            result["accel_reason"] = reason
            if state.get("replaced_disks"):
                result["replaced_disks"] = state["replaced_disks"]
        if p["wait_ssh"]:
            try:
                result["ssh_seconds"] = round(lab.wait_ssh(state["ssh_port"], p["wait_timeout"]), 1)
            except lab.LabError as exc:
                module.fail_json(msg="{}; serial log {} ends with: {}".format(exc, paths["serial"], lab.serial_tail(paths)), changed=changed, **result)
        module.exit_json(
            changed=changed,
            ssh_host="127.0.0.1",
            ssh_port=state["ssh_port"],
            pid=state["pid"] if changed else pid,
            accel=state["accel"],
            argv=state["argv"],
            **result,
        )
    except lab.LabError as exc:
        module.fail_json(msg=str(exc), **result)


if __name__ == "__main__":
    main()
