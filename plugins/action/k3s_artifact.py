# Copyright: n3x developers
# MIT License
"""Runs n3x.cluster.k3s_artifact on the controller, where the k3s files are.

The point of this plugin is to fail before any host is contacted.
"""

from __future__ import annotations

from ansible_collections.n3x.cluster.plugins.modules.k3s_artifact import ARGUMENT_SPEC, run
from ansible_collections.n3x.cluster.plugins.plugin_utils.controller_action import controller_action

ActionModule = controller_action(ARGUMENT_SPEC, run)
