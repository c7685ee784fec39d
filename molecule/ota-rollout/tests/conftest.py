"""The OTA helpers and the verify guard are shared (molecule/shared/tests)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "tests"))

from verify_guard import pytest_runtest_logreport, pytest_sessionfinish  # noqa: F401 - hooks
