"""The OTA helpers are shared with ota-rollout (molecule/shared/tests/ota_helpers.py), and so
is the verify guard (molecule/shared/tests/verify_guard.py)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "tests"))

from verify_guard import pytest_runtest_logreport, pytest_sessionfinish  # noqa: F401 - hooks
