"""module_utils/n3x_process: thread states and process groups, on real processes."""

import subprocess
import sys
import time

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_process as proc


def test_runnable_threads_counts_a_busy_thread_and_not_a_sleeping_one():
    sleeping = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 20
        while proc.runnable_threads(sleeping.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.runnable_threads(sleeping.pid) == 0
        # A thread spinning is running or waiting for a CPU: R at every look.
        assert proc.runnable_threads(busy.pid) == 1
    finally:
        for process in (sleeping, busy):
            process.kill()
            process.wait()


def test_stop_group_stops_a_helper_that_ignores_sigterm(tmp_path):
    script = f"trap '' TERM; sleep 300 & echo $! > {tmp_path}/helper; wait"
    leader = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 20
    while not (tmp_path / "helper").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.stop_group(leader, grace=1, poll=0.05)
    assert leader.returncode is not None
    assert not proc._group_alive(leader.pid)
