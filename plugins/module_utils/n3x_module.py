# Copyright: n3x developers
# MIT License
"""How n3x modules hand a computed result dict back to Ansible."""

from __future__ import annotations


def exit_with(module, result):
    """fail_json when result says failed, else warn and exit_json."""
    if result.pop("failed", False):
        module.fail_json(**result)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)
