# Copyright: n3x developers
# MIT License
"""Runs n3x.cluster.network_profile on the controller, where the profile files are."""

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase

from ansible_collections.n3x.cluster.plugins.modules.network_profile import ARGUMENT_SPEC, run

COLLECTION_PROFILES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))), "profiles")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _validation, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        outcome = run(params, COLLECTION_PROFILES)
        for warning in outcome.pop("warnings", []):
            self._display.warning(warning)
        result.update(outcome)
        return result
