# Copyright: n3x developers
# MIT License
"""Run a program in its own process group and leave none of its processes behind.

Flash scripts (l4t_initrd_flash.sh) and swupdate fork helpers that inherit the output and
can outlive the program: waiting for the output to close would then wait for them. Here the
program's own exit is waited for, with a timeout, and its group is stopped afterwards.
Pure Python (no Ansible imports).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import subprocess
import threading
import time


class Interrupted(KeyboardInterrupt):
    """The module got SIGINT, SIGTERM or SIGHUP (``signum``), or the task that ran it is gone (``signum`` None)."""

    def __init__(self, why, signum=None):
        super().__init__(why)
        self.signum = signum


INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def interrupts_raise():
    """In the block, the first SIGINT, SIGTERM or SIGHUP raises Interrupted, so cleanup runs.

    ansible-playbook answers Ctrl-C with SIGINT to each worker and SIGTERM a few milliseconds
    later (ansible-core's TaskQueueManager._signal_handler, then _cleanup_processes:
    WORKER_SHUTDOWN_POLL_COUNT defaults to 0 in lib/ansible/config/base.yml). The worker
    passes on whichever it handles first to its process group, where the module runs, and
    Python's default for SIGTERM ends a process without running except: or finally: blocks.
    Later signals are noted, not raised: a second raise would cut that cleanup short. A
    signal the caller ignores (nohup's SIGHUP) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []

    def on_signal(signum, frame):
        got.append(signum)
        if len(got) == 1:
            raise Interrupted(f"interrupted by {signal.Signals(signum).name}", signum)

    previous = {}
    try:
        for signum in INTERRUPT_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, on_signal)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def result_reader_gone(fd=1):
    """True once nothing can read what this process writes to ``fd`` (a module's result).

    A worker can die between resetting its handler and passing a signal on: the module then
    gets no signal at all, and the pipe it writes its result to has no reader left (poll
    reports POLLERR on a pipe, POLLHUP on a socket). Files and terminals never count as gone.
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _fd, events in poller.poll(0))


def check_still_wanted():
    """Raise Interrupted once the result's reader is gone (see result_reader_gone)."""
    if result_reader_gone():
        raise Interrupted("the task that ran this module is gone (its worker died)")


def wait_while_wanted(process, timeout=None, check_every=1.0):
    """``process.wait(timeout)``, raising Interrupted once the result's reader is gone."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = check_every if deadline is None else min(check_every, deadline - time.monotonic())
        try:
            return process.wait(max(left, 0))
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(process.args, timeout) from None
        check_still_wanted()


def _group_alive(pgid, proc="/proc"):
    """True while a process of group ``pgid`` still runs (zombies waiting to be reaped do not count)."""
    if not os.path.isdir(proc):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        fields = _stat_fields(os.path.join(proc, name, "stat"))
        if fields and len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _stat_fields(path):
    """The fields of a /proc stat file after "(comm)" (state first), or None once it is gone."""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            # comm may hold spaces and parentheses: the last ')' ends it.
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def runnable_threads(pid, proc="/proc"):
    """How many threads of process ``pid`` are running or waiting for a CPU (state R)."""
    states = (_stat_fields(os.path.join(proc, str(pid), "task", task, "stat")) for task in os.listdir(os.path.join(proc, str(pid), "task")))
    return sum(1 for fields in states if fields and fields[0] == "R")


def run_in_process_group(argv, cwd, log, timeout, grace=30, env=None, poll=0.2):
    """(rc, timed_out): ``argv`` in a new session (its own process group), output to ``log``.

    On timeout the whole group gets SIGTERM, so the script's EXIT trap runs (l4t_initrd_flash.sh
    removes its udev rules and /etc/exports entry and runs exportfs -ra there) and its
    children (tegrarcm, ssh, the flash helpers) stop with it; whatever is left of the group after
    ``grace`` seconds gets SIGKILL.
    """
    process = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    pgid = process.pid  # the session leader's pid is the group id
    try:
        rc = wait_while_wanted(process, timeout)
    except subprocess.TimeoutExpired:
        rc = None
    except BaseException:
        # Interrupted: the group is in its own session and got no signal; SIGTERM runs the
        # script's EXIT trap before the interrupt goes on.
        _stop_group(process, pgid, grace, poll)
        raise
    if rc is not None:
        if _group_alive(pgid):  # the script returned but left children behind: they die with it
            _stop_group(process, pgid, grace, poll)
        return rc, False
    _stop_group(process, pgid, grace, poll)
    return process.wait(), True


def stop_group(process, grace=30, poll=0.2):
    """SIGTERM to the process group ``process`` leads (started with start_new_session), SIGKILL to what is left after ``grace`` seconds."""
    _stop_group(process, process.pid, grace, poll)
    process.wait()


def _stop_group(process, pgid, grace, poll):
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        process.poll()  # reap the leader so it does not count as alive
        if not _group_alive(pgid):
            return
        time.sleep(poll)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait()
    deadline = time.monotonic() + 10  # SIGKILL is not refused; give the kernel a moment to finish them
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(poll)
