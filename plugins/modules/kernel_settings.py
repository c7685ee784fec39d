#!/usr/bin/python
# Copyright: n3x developers
# MIT License
"""Load kernel modules and set kernel parameters, now and at boot, in one step."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kernel_settings
short_description: Load kernel modules and set kernel parameters, now and at boot
version_added: 0.1.0
description:
  - Writes C(/etc/modules-load.d/NAME.conf) (the O(modules), loaded by systemd-modules-load at
    boot) and C(/etc/sysctl.d/90-NAME.conf) (the O(sysctls), applied by systemd-sysctl at boot),
    each only when there is something to list.
  - Loads the modules that are not loaded (or built in) yet with one C(modprobe -a), then sets
    each parameter whose live value in C(/proc/sys) differs. Parameters that a module provides
    (C(net.bridge.*) from C(br_netfilter)) can be set in the same task.
  - One module run for all of it, where C(community.general.modprobe) and C(ansible.posix.sysctl)
    take one run per module and per parameter - each run costs seconds on a small board or an
    emulated lab VM.
  - Fails naming the parameter when it does not exist, and with modprobe's error when a module
    cannot be loaded.
options:
  name:
    description: Name of the two files, for example V(n3x-k3s).
    type: str
    required: true
  modules:
    description: Kernel modules to load.
    type: list
    elements: str
    default: []
  sysctls:
    description: Kernel parameters, dotted name to value.
    type: dict
    default: {}
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - n3x.cluster.attributes
notes:
  - In check mode a parameter that only a module still to be loaded provides is reported as to be set.
seealso:
  - module: community.general.modprobe
  - module: ansible.posix.sysctl
author:
  - n3x developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Load br_netfilter and overlay and set the kernel parameters pods need, now and at boot
  n3x.cluster.kernel_settings:
    name: n3x-k3s
    modules: [br_netfilter, overlay]
    sysctls:
      net.ipv4.ip_forward: "1"
      net.bridge.bridge-nf-call-iptables: "1"
"""

RETURN = r"""
written:
  description: Files written, relative to C(/).
  returned: always
  type: list
  elements: str
  sample: [etc/modules-load.d/n3x-k3s.conf]
loaded:
  description: Modules that were not loaded and are now.
  returned: always
  type: list
  elements: str
set:
  description: Parameters whose live value was changed.
  returned: always
  type: list
  elements: str
  sample: [net.ipv4.ip_forward]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import FilesError
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_kernel import KernelError, converge


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "modules": {"type": "list", "elements": "str", "default": []},
            "sysctls": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = converge(p["name"], p["modules"], p["sysctls"], module.run_command, check_mode=module.check_mode)
    except (KernelError, FilesError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
