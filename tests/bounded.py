"""Run a call with a time and memory bound, so a test of hostile input cannot hang the suite.

The call runs in a forked child with RLIMIT_AS set; the parent waits at most `seconds` and
kills the child when it has not answered. C code (libyaml, str() of a huge structure)
does not see Python signals, so an alarm in the same process would not be a bound.
"""

import os
import pickle
import resource
import select
import signal
import time

import pytest


def bounded(call, seconds=10.0, memory=1 << 30):
    """("returned", value) or ("raised", exception type name, message) of call().

    Fails the test when the call takes longer than `seconds`; beyond `memory` bytes of
    address space it raises MemoryError (reported as "raised").
    """
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(reader)
        try:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            try:
                outcome = ("returned", call())
            except BaseException as exc:  # reported to the parent
                outcome = ("raised", type(exc).__name__, str(exc))
            data = pickle.dumps(outcome)
        except BaseException as exc:
            data = pickle.dumps(("raised", type(exc).__name__, f"unpicklable outcome: {exc}"))
        with os.fdopen(writer, "wb") as out:
            out.write(data)
        os._exit(0)
    os.close(writer)
    deadline = time.monotonic() + seconds
    chunks = []
    try:
        with os.fdopen(reader, "rb") as handle:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([handle], [], [], left)[0]:
                    os.kill(pid, signal.SIGKILL)
                    pytest.fail(f"did not finish within {seconds} s")
                chunk = os.read(handle.fileno(), 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.waitpid(pid, 0)
    if not chunks:
        pytest.fail("the call's process died without an answer (killed by the memory bound?)")
    return pickle.loads(b"".join(chunks))  # noqa: S301 - our own child wrote it
