"""The OTA helpers are shared (molecule/shared/tests)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "tests"))
