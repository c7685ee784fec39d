"""k3s fixtures (k3s_fixtures.py)."""

from k3s_fixtures import *  # noqa: F403
