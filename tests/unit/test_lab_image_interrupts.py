"""What an interrupted, killed or out-of-space image build leaves in the cache, and its repair.

The real build (mmdebstrap) interrupted at chosen points is tests/scenarios/test_interrupts.py;
these cover the logic with real processes, locks and (as root) real mounts.
"""

import fcntl
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_lab_image as img

from .orphaned_module import assert_stops_when_orphaned

KEY = "ab" * 32
OTHER = "cd" * 32
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")


def test_mount_points_under_a_directory_deepest_first():
    mountinfo = "\n".join(
        [
            "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
            "90 22 0:5 / /c/.build-x/tree/proc rw - proc proc rw",
            "91 90 0:6 / /c/.build-x/tree/proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw",
            "92 22 0:7 / /c/.build-x/tree/dev/pts rw - devpts devpts rw",
            "93 22 0:8 / /c/.build-xy/tree/sys rw - sysfs sysfs rw",
            "94 22 0:9 / /c/.build-x/with\\040space rw - tmpfs tmpfs rw",
        ]
    )
    assert img.mount_points_under("/c/.build-x", mountinfo) == [
        "/c/.build-x/tree/proc/sys/fs/binfmt_misc",
        "/c/.build-x/tree/dev/pts",
        "/c/.build-x/tree/proc",
        "/c/.build-x/with space",
    ]


@as_root
def test_a_build_directory_is_unmounted_before_it_is_deleted(tmp_path):
    build = tmp_path / ".build-x"
    proc_dir = build / "tree" / "proc"
    proc_dir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "n3x-test", str(proc_dir)], check=True)
    try:
        (proc_dir / "kept-if-deleted-through-the-mount").write_text("x")
        img.remove_build_dir(str(build))
        assert not build.exists()
        assert img.mount_points_under(str(tmp_path), img._mountinfo()) == []
    finally:
        subprocess.run(["umount", "--lazy", str(proc_dir)], capture_output=True, check=False)


def test_stale_builds_are_those_no_running_build_holds_locked(tmp_path):
    for name in (f".build-{KEY[:12]}-a1", f".build-{OTHER[:12]}-b2", f".build-{OTHER[:12]}-old-c3", "not-a-build"):
        (tmp_path / name).mkdir()
    (tmp_path / f"{OTHER}.lock").write_text("")
    # Our own key's old directories are stale: we hold its lock, so nobody else builds it.
    builds = [str(tmp_path / name) for name in (f".build-{KEY[:12]}-a1", f".build-{OTHER[:12]}-b2", f".build-{OTHER[:12]}-old-c3")]
    assert img.stale_builds(str(tmp_path), KEY) == builds
    # Another process building OTHER holds its lock: its directories are in use.
    hold = "import fcntl,sys,time; f=open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); print(flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path / f"{OTHER}.lock")], stdout=subprocess.PIPE)
    try:
        holder.stdout.readline()
        assert img.stale_builds(str(tmp_path), KEY) == builds[:1]
    finally:
        holder.kill()
        holder.communicate()


def test_a_replaced_image_is_swapped_by_renames(tmp_path):
    final = tmp_path / KEY
    final.mkdir()
    (final / "manifest.json").write_text("old")
    work = tmp_path / f".build-{KEY[:12]}-new"
    work.mkdir()
    (work / "manifest.json").write_text("new")
    img._commit(str(work), str(final), KEY)
    assert (final / "manifest.json").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == [KEY]


def test_an_interrupted_step_may_clean_up_before_it_is_killed(tmp_path, monkeypatch):
    # The step (like mmdebstrap) cleans up on SIGTERM; subprocess.run would SIGKILL it at once.
    done = tmp_path / "cleaned-up"
    script = "\n".join(
        [
            "import signal, sys, time",
            "def bye(*_):",
            f"    time.sleep(0.5); open({str(done)!r}, 'w').close(); sys.exit(1)",
            "signal.signal(signal.SIGTERM, bye)",
            "time.sleep(60)",
        ]
    )
    started = time.monotonic()

    def interrupt_soon(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(img, "STEP_GRACE_SECONDS", 2)
    old = signal.signal(signal.SIGALRM, interrupt_soon)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with open(tmp_path / "log", "w") as log, pytest.raises(KeyboardInterrupt):
            img._run([sys.executable, "-c", script], log)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert done.exists(), "the step was killed before it could clean up"
    assert time.monotonic() - started < 10


def test_a_full_cache_gets_one_clear_error(tmp_path, monkeypatch):
    class Full:
        f_bavail, f_blocks, f_frsize = 10, 16384, 4096

    monkeypatch.setattr(img.os, "statvfs", lambda _path: Full())
    error = img._no_space_hint(str(tmp_path), img.CommandFailed(["/sbin/mkfs.ext4", "-q", "root.img"], 1, "/c/k.build.log"), "/c/k.build.log")
    assert error is not None
    assert str(error).startswith(f"no space left in {tmp_path} while building the image (its filesystem holds 64 MiB and had 0 MiB free then;")
    assert str(error).endswith("its log, /c/k.build.log (mkfs.ext4 exited with 1).")


def test_a_failure_with_room_left_is_not_called_a_full_disk(tmp_path):
    assert img._no_space_hint(str(tmp_path), img.ImageError("command failed"), str(tmp_path / "log")) is None


def test_a_step_that_reported_enospc_is_a_full_disk_though_it_freed_its_files(tmp_path):
    log = tmp_path / "k.build.log"
    log.write_text("+ mmdebstrap ...\nE: write error: No space left on device\n")
    error = img._no_space_hint(str(tmp_path), img.CommandFailed(["mmdebstrap"], 25, str(log)), str(log))
    assert error is not None
    assert "(mmdebstrap exited with 25)" in str(error)


def test_stale_build_probe_does_not_keep_the_lock(tmp_path):
    lock = tmp_path / f"{OTHER}.lock"
    lock.write_text("")
    assert not img._locked(str(lock))
    with open(lock) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_step_is_stopped_when_the_task_that_asked_for_the_build_is_gone(tmp_path):
    # The worker died without passing a signal on: the step got none, so _run sends SIGTERM.
    code = [
        "from ansible_collections.n3x.cluster.plugins.module_utils import n3x_lab_image as img",
        "from ansible_collections.n3x.cluster.plugins.module_utils import n3x_process as proc",
        "with open({log}, 'w') as log:",
        "    try:",
        "        img._run({step}, log)",
        "        open({outcome}, 'w').write('the step ran to its end')",
        "    except proc.Interrupted as exc:",
        "        open({outcome}, 'w').write(str(exc))",
    ]
    assert_stops_when_orphaned(tmp_path, code)
