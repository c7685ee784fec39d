#!/usr/bin/python
# Copyright: n3x developers
# MIT License
"""Pull or plug the virtual cable of a lab VM's NIC."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lab_link
short_description: Set the link of a QEMU lab VM's NIC up or down (a cable pull)
version_added: 0.1.0
description:
  - Uses QMP C(set_link) on the VM's QMP socket, so the guest sees its NIC lose or regain
    carrier, as when a cable is pulled, which is how bond failover is tested.
  - Idempotent. QEMU cannot report a link's state, so the module records it in the VM's
    state file; a (re)started VM has all links up.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - n3x.cluster.attributes
author:
  - n3x developers (!UNKNOWN)
options:
  name:
    description: VM name (as given to M(n3x.cluster.lab_vm)).
    type: str
    required: true
  nic:
    description: NIC name inside the VM, C(eth0) (management) or a lab NIC such as C(eth1).
    type: str
    required: true
  state:
    description: Link state.
    type: str
    choices: [up, down]
    default: up
  lab_dir:
    description: Directory of the lab's runtime files.
    type: path
    default: ~/.cache/n3x/lab/default
notes:
  - Supports check mode.
"""

EXAMPLES = r"""
- name: Pull the cable of server-1's eth1
  n3x.cluster.lab_link:
    name: server-1
    nic: eth1
    state: down
"""

RETURN = r"""
up:
  description: Link state after the task.
  returned: success
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_lab as lab


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "nic": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["up", "down"], "default": "up"},
            "lab_dir": {"type": "path", "default": "~/.cache/n3x/lab/default"},
        },
        supports_check_mode=True,
    )
    p = module.params
    want = p["state"] == "up"
    try:
        paths = lab.vm_paths(p["lab_dir"], p["name"])
        if lab.running_pid(paths) is None:
            module.fail_json(msg="lab VM {} is not running (no live QEMU for {})".format(p["name"], paths["pid"]))
        if module.check_mode:
            module.exit_json(changed=lab.link_state(paths, p["nic"]) != want, up=want)
        changed = lab.set_link(paths, p["nic"], want)
    except lab.LabError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=changed, up=want)


if __name__ == "__main__":
    main()
