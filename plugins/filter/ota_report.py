# Copyright: n3x developers
# MIT License
"""The per-node report of an over-the-air rollout, as a filter."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: ota_report
author: n3x developers
version_added: 0.3.0
short_description: The per-node report of a staged rollout
description:
  - One row per node of the plan, in rollout order - its batch, slot and version before and
    after, and its result - C(updated) (runs the new slot, confirmed), C(rolled-back)
    (back on its old slot - its health check failed or the new slot hung), C(failed) (the
    install failed, or it runs the new slot unconfirmed) or C(untouched) (a later batch,
    never reached).
  - Each node's record is the host variable O(record) - C(before) and C(after) (from
    M(n3x.cluster.swupdate_state)), C(installed_slot), C(error) and C(seconds).
positional: _input, hostvars
options:
  _input:
    description: The plan, from M(n3x.cluster.ota_plan#filter).
    type: dict
    required: true
  hostvars:
    description: The play's C(hostvars).
    type: dict
    required: true
  record:
    description: The host variable that holds each node's record.
    type: str
    default: ota_record
"""

EXAMPLES = r"""
- name: Report
  ansible.builtin.debug:
    msg: "{{ (ota_plan | n3x.cluster.ota_report(hostvars)).text }}"
"""

RETURN = r"""
_value:
  description: C(rows) (node, batch, slot_before, version_before, slot, version, result, reason, seconds) and C(text), an aligned table.
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_ota import OtaError, report, report_text


def ota_report(plan, hostvars, record="ota_record"):
    try:
        results = {node: (hostvars[node].get(record) if node in hostvars else None) for node in plan["nodes"]}
        rows = report(plan["nodes"], plan, results)
    except (OtaError, KeyError, TypeError) as exc:
        raise AnsibleFilterError(f"ota_report: {exc}") from exc
    return {"rows": rows, "text": report_text(rows)}


class FilterModule:
    def filters(self):
        return {"ota_report": ota_report}
