# Copyright: n3x developers
# MIT License
"""What every n3x filter does around its generator: validate the profile, report errors."""

from __future__ import annotations

import functools

from ansible.errors import AnsibleFilterError

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import ProfileError, validate_profile


def profile_filter(render):
    """A filter from a generator whose first argument is a valid profile.

    Filters receive whatever the playbook hands over (a loaded YAML dict included), so the
    profile is validated first; a problem becomes one AnsibleFilterError, never a traceback.
    """

    @functools.wraps(render)
    def apply(profile, *args, **kwargs):
        try:
            return render(validate_profile(profile), *args, **kwargs)
        except ProfileError as exc:
            raise AnsibleFilterError(str(exc)) from None

    return apply
