"""Shared lab fixtures (see lab_fixtures.py)."""

from lab_fixtures import expected, host_of, lab_nodes, node, profile  # noqa: F401
from verify_guard import pytest_runtest_logreport, pytest_sessionfinish  # noqa: F401 - hooks
