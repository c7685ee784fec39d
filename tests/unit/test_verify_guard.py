"""The molecule verify guard: a verify in which every test skipped, or none ran, fails."""

import pathlib
import subprocess
import sys

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED_TESTS = REPO / "molecule" / "shared" / "tests"
GUARD_IMPORT = "from verify_guard import pytest_runtest_logreport, pytest_sessionfinish"

SKIPS_EVERYWHERE = """
import pytest

def test_a():
    pytest.skip("no VLANs")

@pytest.fixture
def f():
    pytest.skip("lab infrastructure")

def test_b(f):
    pass
"""
CASES = {
    "every test skipped": (SKIPS_EVERYWHERE, 1, "n3x verify guard: all 2 tests skipped"),
    "no test at all": ("def helper():\n    pass\n", 1, "n3x verify guard: no test ran"),
    "one passed among skips": ("import pytest\n\ndef test_a():\n    pytest.skip('x')\n\ndef test_b():\n    assert True\n", 0, None),
    "a failure": ("def test_a():\n    assert False\n", 1, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_guard(tmp_path, case):
    source, rc, message = CASES[case]
    (tmp_path / "conftest.py").write_text(f"import sys\nsys.path.insert(0, {str(SHARED_TESTS)!r})\n{GUARD_IMPORT}  # noqa: F401\n")
    (tmp_path / "test_x.py").write_text(source)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == rc, result.stdout + result.stderr
    if message:
        assert message in result.stdout
    else:
        assert "n3x verify guard" not in result.stdout


def verifier_directories():
    base = yaml.safe_load((REPO / ".config/molecule/config.yml").read_text())["verifier"]["directory"]
    for scenario in sorted((REPO / "molecule").glob("*/molecule.yml")):
        config = yaml.safe_load(scenario.read_text()) or {}
        if config.get("verifier", {}).get("name", "testinfra") != "testinfra":
            continue
        yield scenario.parent.name, (scenario.parent / config.get("verifier", {}).get("directory", base)).resolve()


@pytest.mark.parametrize(("scenario", "directory"), list(verifier_directories()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_scenario_verify_loads_the_guard(scenario, directory):
    conftest = directory / "conftest.py"
    assert conftest.is_file(), f"{scenario}: {directory} has no conftest.py importing the verify guard"
    assert GUARD_IMPORT in conftest.read_text(), f"{scenario}: {conftest} does not import the verify guard"
