#!/usr/bin/python
# Copyright: n3x developers
# MIT License
"""Install a node's systemd-networkd units, apply them when they changed, wait for the links."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: networkd_apply
short_description: Install a node's networkd units, apply them on change and wait for its interfaces
version_added: 0.1.0
description:
  - Installs the given files (the node's units and module list from
    P(n3x.cluster.networkd_files#filter)) like M(n3x.cluster.managed_files), removing from
    O(unit_dir) only stale files its manifest proves n3x wrote, following no symbolic link,
    and never touching others.
  - Only when a file was written or removed, applies the change - loads O(kernel_modules)
    (C(modprobe -a)), deletes each device whose C(.netdev) changed (networkd changes neither a
    bond's mode nor a VLAN id in place), enables systemd-networkd if it is not, starts it,
    runs C(networkctl reload), and C(networkctl reconfigure) on those of O(reconfigure) that the
    reload leaves alone (their own C(.network) is unchanged, such as the members of a recreated
    bond). A link is never configured twice in a row, since that restarts its DHCP client, and
    systemd-networkd 252 can then lose the address of the lease it acquires again. A run with
    nothing to change leaves every link alone.
  - A run interrupted after the files changed but before networkd took them (Ctrl-C, a lost
    connection) leaves C(/run/n3x/networkd-apply.pending); the next run then applies the
    units although none changes, and reports RV(resumed).
  - Then, changed or not, waits up to O(wait_timeout) seconds until every interface of
    O(wait_for) reaches its state (C(systemd-networkd-wait-online)), and fails with their
    C(networkctl status) when one does not.
  - One module run for the whole step - each run costs seconds on a small board or an emulated
    lab VM.
options:
  unit_dir:
    description:
      - Directory of the units, the only one pruned of stale n3x-generated files (the module
        list's directory holds files of other n3x steps).
    type: path
    default: /etc/systemd/network
  kernel_modules:
    description: Kernel modules the network needs now (C(8021q), C(bonding)); loaded when a file changed.
    type: list
    elements: str
    default: []
  reconfigure:
    description: >-
      Physical interfaces to configure again when a file changed; those whose own C(.network)
      changed are configured by C(networkctl reload) already and skipped.
    type: list
    elements: str
    default: []
  wait_for:
    description: Interfaces to wait for, as C(NAME) or C(NAME:OPERSTATE) (C(systemd-networkd-wait-online --interface)).
    type: list
    elements: str
    default: []
  wait_timeout:
    description: Seconds to wait for O(wait_for).
    type: int
    default: 60
attributes:
  check_mode:
    support: full
    details: Reports the files that would change; applies nothing and does not wait.
  diff_mode:
    support: full
    details: Unified text of each changed file others may read; only the name of any other (content is no_log).
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - n3x.cluster.files
requirements:
  - systemd-networkd and networkctl on the node.
seealso:
  - module: n3x.cluster.managed_files
  - plugin: n3x.cluster.networkd_files
    plugin_type: filter
author:
  - n3x developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Install, apply and wait for the node's network
  n3x.cluster.networkd_apply:
    files: "{{ loaded.profile | n3x.cluster.networkd_files(inventory_hostname) }}"
    kernel_modules: "{{ node.kernel_modules }}"
    reconfigure: "{{ node.physical_interfaces }}"
    wait_for: "{{ node.networkd_interfaces }}"
    wait_timeout: 60
"""

RETURN = r"""
written:
  description: Files written because their content changed.
  returned: always
  type: list
  elements: str
  sample: [etc/systemd/network/30-n3x-eth1.200.network]
chmod:
  description: Files whose mode was corrected.
  returned: always
  type: list
  elements: str
removed:
  description: Stale files removed (listed in O(unit_dir)'s manifest, unchanged since n3x wrote them).
  returned: always
  type: list
  elements: str
recreated:
  description: Devices deleted so that networkd creates them from their changed C(.netdev).
  returned: always
  type: list
  elements: str
  sample: [bond0]
resumed:
  description: Whether this run finished the apply of a run that was interrupted.
  returned: always
  type: bool
commands:
  description: Commands run to apply the change (none when nothing changed).
  returned: always
  type: list
  elements: str
  sample: [modprobe -a 8021q, systemctl start systemd-networkd.service, networkctl reload, networkctl reconfigure eth1]
wait_seconds:
  description: Seconds spent waiting for O(wait_for).
  returned: when O(wait_for) is given, not in check mode
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import FILES_OPTION, FilesError
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_module import exit_with
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_networkd_apply import converge


def main():
    module = AnsibleModule(
        argument_spec={
            "files": FILES_OPTION,
            "unit_dir": {"type": "path", "default": "/etc/systemd/network"},
            "kernel_modules": {"type": "list", "elements": "str", "default": []},
            "reconfigure": {"type": "list", "elements": "str", "default": []},
            "wait_for": {"type": "list", "elements": "str", "default": []},
            "wait_timeout": {"type": "int", "default": 60},
        },
        supports_check_mode=True,
    )
    p = module.params

    def run(argv):
        return module.run_command(argv)

    try:
        result = converge(
            p["files"],
            run,
            kernel_modules=p["kernel_modules"],
            reconfigure=p["reconfigure"],
            wait_for=p["wait_for"],
            wait_timeout=p["wait_timeout"],
            unit_dir=p["unit_dir"],
            check_mode=module.check_mode,
            diff=module._diff,
        )
    except (FilesError, OSError, ValueError) as exc:
        module.fail_json(msg=str(exc))
    exit_with(module, result)


if __name__ == "__main__":
    main()
