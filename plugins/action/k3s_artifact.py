# Copyright: n3x developers
# MIT License
"""Runs n3x.cluster.k3s_artifact on the controller, where the k3s files are."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.n3x.cluster.plugins.modules.k3s_artifact import ARGUMENT_SPEC, run


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    # The point of this plugin is to fail before any host is contacted.
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _validation, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        outcome = run(params)
        for warning in outcome.pop("warnings", []):
            self._display.warning(warning)
        result.update(outcome)
        return result
