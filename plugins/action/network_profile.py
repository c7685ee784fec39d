# Copyright: n3x developers
# MIT License
"""Runs n3x.cluster.network_profile on the controller, where the profile files are."""

from __future__ import annotations

import functools
import os

from ansible_collections.n3x.cluster.plugins.modules.network_profile import ARGUMENT_SPEC, run
from ansible_collections.n3x.cluster.plugins.plugin_utils.controller_action import controller_action

COLLECTION_PROFILES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))), "profiles")

ActionModule = controller_action(ARGUMENT_SPEC, functools.partial(run, default_profiles_dir=COLLECTION_PROFILES))
