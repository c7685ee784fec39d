"""A verify that checked nothing fails: pytest hooks every scenario's tests/conftest.py imports.

Tests skip for good reasons (a profile without VLANs, a check that runs on one node), but
when every test of a run skipped, or none was collected, the run proved nothing: a
platform name that drifted from the profile, or a fixture that skips everywhere, would
otherwise pass as green. tests/unit/test_verify_guard.py checks every scenario loads it.
"""

import pytest

_OUTCOMES = {"passed": 0, "failed": 0, "skipped": 0}


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        _OUTCOMES[report.outcome] = _OUTCOMES.get(report.outcome, 0) + 1


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED) or _OUTCOMES["passed"]:
        return
    why = f"all {_OUTCOMES['skipped']} tests skipped" if _OUTCOMES["skipped"] else "no test ran"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"n3x verify guard: {why}: a verify that checks nothing fails", red=True, bold=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
