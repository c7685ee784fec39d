"""module_utils/n3x_process: thread states and process groups, on real processes."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_process as proc

from .orphaned_module import assert_stops_when_orphaned


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


def _signal_self_soon(signum, delay=0.5):
    timer = threading.Timer(delay, os.kill, (os.getpid(), signum))
    timer.start()
    return timer


def test_the_first_sigterm_raises_so_cleanup_runs_and_later_ones_do_not():
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []

    def interrupted_work():
        with proc.interrupts_raise():
            try:
                _signal_self_soon(signal.SIGTERM).join()
                time.sleep(10)
            finally:
                # ansible-playbook's second signal, while cleaning up: noted, not raised.
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
                cleaned.append(True)

    with pytest.raises(proc.Interrupted) as raised:
        interrupted_work()
    assert raised.value.signum == signal.SIGTERM
    assert cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_ignored_sighup_stays_ignored():
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with proc.interrupts_raise():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    finally:
        signal.signal(signal.SIGHUP, old)


def test_a_pipe_without_reader_is_gone_and_files_never_are(tmp_path):
    read_end, write_end = os.pipe()
    try:
        assert not proc.result_reader_gone(write_end)
        os.close(read_end)
        assert proc.result_reader_gone(write_end)
    finally:
        os.close(write_end)
    with open(tmp_path / "result", "w") as regular:
        assert not proc.result_reader_gone(regular.fileno())
    mine, theirs = socket.socketpair()
    with mine:
        assert not proc.result_reader_gone(mine.fileno())
        theirs.close()
        assert proc.result_reader_gone(mine.fileno())


def test_a_module_whose_worker_died_stops_waiting_and_stops_its_step(tmp_path):
    code = [
        "import subprocess",
        "from ansible_collections.n3x.cluster.plugins.module_utils import n3x_process as proc",
        "step = subprocess.Popen({step})",
        "try:",
        "    proc.wait_while_wanted(step, check_every=0.1)",
        "    open({outcome}, 'w').write('waited to the end')",
        "except proc.Interrupted as exc:",
        "    step.terminate(); step.wait(10)",
        "    open({outcome}, 'w').write(str(exc))",
    ]
    assert_stops_when_orphaned(tmp_path, code)


def test_an_interrupted_run_in_process_group_stops_the_group_so_its_exit_trap_runs(tmp_path):
    trapped = tmp_path / "trapped"
    script = f"trap 'touch {trapped}' EXIT; trap 'exit 1' TERM; echo $$ > {tmp_path}/leader; sleep 60 & wait"

    def interrupted_flash(log):
        with proc.interrupts_raise():
            _signal_self_soon(signal.SIGINT, delay=1)
            proc.run_in_process_group(["sh", "-c", script], str(tmp_path), log, timeout=60, grace=5, poll=0.05)

    # A shell's background job (CI's) starts with SIGINT ignored, and interrupts_raise leaves an
    # ignored signal ignored: here it is a terminal's Ctrl-C.
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with open(tmp_path / "log", "w") as log, pytest.raises(proc.Interrupted):
            interrupted_flash(log)
    finally:
        signal.signal(signal.SIGINT, ignored)
    assert trapped.exists(), "the script's EXIT trap did not run"
    # The leader's pid is the group's id: sleep is gone with it.
    assert not proc._group_alive(int((tmp_path / "leader").read_text()))
