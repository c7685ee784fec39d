"""Shared lab fixtures (molecule/shared/tests/lab_fixtures.py)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "tests"))

from lab_fixtures import expected, host_of, lab_nodes, node, profile  # noqa: F401
from verify_guard import pytest_runtest_logreport, pytest_sessionfinish  # noqa: F401 - hooks
