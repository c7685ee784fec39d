"""What an interrupted or killed lab VM leaves behind, and how the next start repairs it.

Real processes (a Python child stands in for nothing: the logic under test reads /proc),
real qemu-img for the disks.
"""

import os
import shutil
import subprocess
import sys

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_lab as lab

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img missing: run scripts/bootstrap (apt package qemu-utils)")


@pytest.fixture
def sleeper():
    """A live process that is not a VM's QEMU (no -pidfile argument)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; print(flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    proc.stdout.readline()
    yield proc
    proc.kill()
    proc.communicate()


def test_a_pid_recorded_with_another_start_time_is_a_recycled_pid(tmp_path, sleeper):
    paths = lab.vm_paths(str(tmp_path), "vm")
    start = lab.process_start(sleeper.pid)
    assert start is not None
    lab.write_state(paths, {"pid": sleeper.pid, "pid_start": start + 1})
    (tmp_path / "vm.pid").write_text(f"{sleeper.pid}\n")
    assert lab.running_pid(paths) is None
    assert not lab.stop(paths)
    assert sleeper.poll() is None, "stop() signalled a process that is not the VM's"


def test_the_state_names_the_vm_when_its_pidfile_is_gone(tmp_path, sleeper):
    paths = lab.vm_paths(str(tmp_path), "vm")
    lab.write_state(paths, {"pid": sleeper.pid, "pid_start": lab.process_start(sleeper.pid)})
    assert lab.running_pid(paths) == sleeper.pid
    assert lab.remove(paths)
    assert sleeper.wait(5) == -15
    assert os.listdir(tmp_path) == []


def test_a_process_without_our_pidfile_argument_is_not_the_vm(tmp_path, sleeper):
    paths = lab.vm_paths(str(tmp_path), "vm")
    (tmp_path / "vm.pid").write_text(f"{sleeper.pid}\n")
    assert lab.running_pid(paths) is None


def test_remove_deletes_what_an_interrupted_start_left(tmp_path):
    paths = lab.vm_paths(str(tmp_path), "vm")
    for key in ("overlay.tmp", "data.tmp", "esp.tmp", "vars.tmp", "state.tmp", "entry", "pid", "qmp", "serial"):
        with open(paths[key], "w") as fh:
            fh.write("x")
    assert lab.has_files(paths)
    assert lab.remove(paths)
    assert os.listdir(tmp_path) == []
    assert not lab.remove(paths)


def test_an_interrupted_disk_creation_leaves_no_half_disk(tmp_path):
    target = str(tmp_path / "vm.qcow2")

    def interrupted(path):
        with open(path, "w") as fh:
            fh.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lab._create(target, interrupted)
    assert os.listdir(tmp_path) == []


@needs_qemu_img
@pytest.mark.parametrize(
    ("pidfile_left", "killed_flag", "replaced"),
    [
        (True, False, True),  # QEMU died at once (SIGKILL, crash): its pidfile outlives it
        (False, True, True),  # stop() had to SIGKILL it
        (False, False, False),  # QEMU exited by itself (guest power-off, SIGTERM): disks kept
    ],
)
def test_disks_of_a_killed_qemu_are_replaced(tmp_path, pidfile_left, killed_flag, replaced):
    base = tmp_path / "root.img"
    base.write_bytes(b"\0" * 1024 * 1024)
    vm = lab.vm_definition("vm", str(tmp_path / "lab"), str(base), kernel="/k", initrd="/i", data_disk="16M")
    paths = lab.vm_paths(vm["lab_dir"], "vm")
    os.makedirs(paths["dir"])
    assert lab._prepare_disks(vm, paths, {}) == ""
    for key in ("overlay", "data"):
        os.utime(paths[key], (1, 1))  # a disk made again has a new mtime
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    state = {"pid": int(dead.stdout), "pid_start": 1, "root": vm["root"], "esp": vm["esp"]}
    if killed_flag:
        state["killed"] = True
    if pidfile_left:
        with open(paths["pid"], "w") as fh:
            fh.write(dead.stdout)
    note = lab._prepare_disks(vm, paths, state)
    made_again = {key: os.stat(paths[key]).st_mtime != 1 for key in ("overlay", "data")}
    assert bool(note) == replaced, note
    assert made_again == {"overlay": replaced, "data": replaced}
    assert not os.path.exists(paths["pid"]) or not replaced
