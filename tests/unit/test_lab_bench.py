"""scripts/lab-bench --repeat: Molecule's phase lines and the spread it reports."""

import importlib.machinery
import importlib.util
import json
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "lab-bench"


@pytest.fixture(scope="module")
def bench():
    loader = importlib.machinery.SourceFileLoader("lab_bench", str(SCRIPT))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("lab_bench", loader))
    loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("INFO [l2-vlans > converge] Executing", ("converge", "Executing")),
        ("INFO [l2-vlans > converge] Executed: Successful", ("converge", "Executed")),
        ("INFO [l2-vlans > idempotence] Executed: Failed", ("idempotence", "Executed")),
        ("l2-vlans ➜ destroy: Executing", ("destroy", "Executing")),
        ("l2-vlans ➜ destroy: Executed: Successful", ("destroy", "Executed")),
        # Not progress lines: the verifier's own message, the summary, another scenario.
        ("INFO [l2-vlans > verify] Executing Testinfra tests found in molecule/shared/tests/...", None),
        ("l2-vlans > destroy: Executed: Successful extra", None),
        ("INFO [l2-vlans-x > converge] Executing", None),
    ],
)
def test_phase_lines(bench, line, event):
    assert bench.phase_event("l2-vlans", line) == event


def test_repeat_report_gives_pass_rate_and_spread(bench, tmp_path, capsys):
    summary = {
        "scenario": "l2-dhcp-simple",
        "passed": 4,
        "runs": 5,
        "seconds": [80.0, 95.0, 90.0, 140.0, 85.0],
        "load": [2.0, 3.0, 2.5, 6.0, 2.2],
        "phases": {"create": [20, 22, 21, 30, 20], "converge": [30, 31, 29, 90, 30]},
        "failed_logs": ["x.log"],
    }
    assert bench.repeat_report([summary], str(tmp_path)) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("l2-dhcp-simple"))
    assert row.split()[:4] == ["l2-dhcp-simple", "4/5", "80/90/140", "2.0/2.5/6.0"]
    assert "converge 29/30/90" in row
    assert json.loads((tmp_path / "summary.json").read_text()) == [summary]
    summary["passed"] = 5
    assert bench.repeat_report([summary], str(tmp_path)) == 0
