"""What the VM tests share: where results go, and running a command with its output both
shown (pytest shows it for a failure) and kept in a log file (CI uploads it on failure)."""

import os
import pathlib
import subprocess
import sys
import threading

REPO = pathlib.Path(__file__).resolve().parents[2]


def results_dir():
    """Where scripts/test collects JUnit XML and logs (N3X_TEST_OUTPUT)."""
    return pathlib.Path(os.environ.get("N3X_TEST_OUTPUT") or REPO / "tests" / "output")


def run_logged(argv, log_path, env, timeout):
    """Run argv in the repository; its output goes to stdout and to log_path. Returns the exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
        finally:
            timer.cancel()
            proc.wait()
    return proc.returncode
