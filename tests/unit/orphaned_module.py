"""Run Python code as a module whose worker died without passing a signal on.

The code's stdout is a pipe, as the worker's is to a module; the read end is closed after a
second. The code writes what happened to tmp_path/outcome; a step it runs (sh, trapping
SIGTERM) touches tmp_path/step-stopped when it is told to stop.
"""

import os
import subprocess
import sys
import time

STEP = "['sh', '-c', 'trap \"touch {stopped}; exit 1\" TERM; sleep 60 & wait']"


def assert_stops_when_orphaned(tmp_path, code):
    """code: lines with {outcome}, {log} and {step} (the trapping step's argv) to fill in; it
    must end by itself, report the vanished task, and have told its step to stop."""
    outcome, stopped = tmp_path / "outcome", tmp_path / "step-stopped"
    source = "\n".join(code).format(outcome=repr(str(outcome)), step=STEP.format(stopped=stopped), log=repr(str(tmp_path / "log")))
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-c", source], stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    time.sleep(1)
    child.stdout.close()
    assert child.wait(30) == 0
    assert outcome.read_text() == "the task that ran this module is gone (its worker died)"
    assert stopped.exists(), "the step was not told to stop"
    assert time.monotonic() - started < 10
