"""k3s fixtures (k3s_fixtures.py)."""

from k3s_fixtures import *  # noqa: F403
from verify_guard import pytest_runtest_logreport, pytest_sessionfinish  # noqa: F401 - hooks
