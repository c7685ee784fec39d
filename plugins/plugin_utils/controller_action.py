# Copyright: n3x developers
# MIT License
"""Actions that compute their result on the controller and never contact the host."""

from __future__ import annotations

from ansible.plugins.action import ActionBase


def controller_action(argument_spec, compute):
    """An ActionModule class running compute(params) -> result dict on the controller.

    The module file keeps the documentation, the argument spec and compute(), and can run
    on its own as well (module_utils/n3x_module.py's exit_with); the action makes the
    task run where the playbook's files are, and lets it fail before any host is contacted.
    """

    class ControllerAction(ActionBase):
        TRANSFERS_FILES = False
        _requires_connection = False

        def run(self, tmp=None, task_vars=None):
            result = super().run(tmp, task_vars)
            _validation, params = self.validate_argument_spec(argument_spec=argument_spec)
            outcome = compute(params)
            for warning in outcome.pop("warnings", []):
                self._display.warning(warning)
            result.update(outcome)
            return result

    return ControllerAction
