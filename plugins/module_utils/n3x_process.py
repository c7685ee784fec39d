# Copyright: n3x developers
# MIT License
"""Run a program in its own process group and leave none of its processes behind.

Flash scripts (l4t_initrd_flash.sh) and swupdate fork helpers that inherit the output and
can outlive the program: waiting for the output to close would then wait for them. Here the
program's own exit is waited for, with a timeout, and its group is stopped afterwards.
Pure Python (no Ansible imports).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time


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
        rc = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        rc = None
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
