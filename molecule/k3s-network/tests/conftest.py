"""Shared k3s fixtures (molecule/shared/k3s-tests/k3s_fixtures.py)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "k3s-tests"))

from k3s_fixtures import *  # noqa: F403
from verify_guard import pytest_runtest_logreport, pytest_sessionfinish  # noqa: F401 - hooks
