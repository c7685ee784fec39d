"""Interrupts at the points that matter, on the real lab: the next run repairs, lab-down cleans.

- The lab coming up (playbooks/lab.yml, what scripts/lab-up runs first) gets Ctrl-C (SIGINT
  to its process group, as a terminal sends it) once the first VM's QEMU runs and before the
  second starts; the next run brings the lab up, then one QEMU is killed (SIGKILL) under
  the running lab and the next run replaces that VM's disks and boots it again; then
  lab-destroy.yml (scripts/lab-down) leaves no QEMU and no file.
- A Molecule run gets Ctrl-C while its VM boots; `molecule destroy` then leaves nothing.
- An image build gets Ctrl-C while mmdebstrap has /proc and /sys mounted in its tree; one
  is killed (SIGKILL) there and the next build removes what it left; one runs out of space (a
  small tmpfs as the cache): nothing is left in the cache but the key's lock and, after a
  failure, the build log the error names; no mount, no process.

ansible-playbook answers Ctrl-C with SIGINT to its worker and SIGTERM 3 ms later; the worker
passes on whichever its handler reaches first, or neither when the SIGTERM kills it between
its handler's first and second line. The image build held before the module took SIGTERM and
the vanished result reader as interrupts: one run in three here left the build's directory
(SIGTERM, no cleanup), and one CI run committed the whole image (no signal at all).

A job still running 60 s after its Ctrl-C gets a second one, as a user would give it, and the
test warns with why it was still running (see ctrl_c): in one CI run ansible-playbook was
still running 120 s after the Ctrl-C that followed the first VM's QEMU start; 16 runs here, 12
of them at a load of 5, did not repeat it.

Each boots real QEMU or runs a real mmdebstrap: run them under the VM lock like the
scenarios. scripts/test runs them after the scenarios and never spread over -j N workers:
the Molecule one interrupts l1-vm-boot in that scenario's lab, which is shared by name
(2.5 minutes in all at a load of 5).
"""

import contextlib
import glob
import os
import pathlib
import signal
import subprocess
import sys
import time
import warnings

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_lab as lab  # noqa: E402
from ansible_collections.n3x.cluster.plugins.module_utils import n3x_lab_image as img  # noqa: E402

NODES = ["n3x-int-1", "n3x-int-2"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab image build and mounts need root (as scripts/test runs in CI)")


def env():
    # PYTHONFAULTHANDLER: a job that outlives its Ctrl-C is sent SIGABRT, and Python then
    # writes every thread's stack into its log (see ctrl_c).
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "ANSIBLE_FORCE_COLOR": "0",
        "PY_COLORS": "0",
        "MOLECULE_GLOB": "molecule/*/molecule.yml",
        "PYTHONFAULTHANDLER": "1",
    }


def start(argv, log):
    """Start a command in its own process group, like a terminal's foreground job."""
    return subprocess.Popen(argv, cwd=REPO, env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def run(argv, log, timeout=600):
    proc = start(argv, log)
    return proc.wait(timeout)


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def ctrl_c(proc, log, timeout=60):
    """SIGINT to the job's process group, as a terminal sends it; returns the job's exit code.

    ansible-playbook passes it on to each worker's own process group (modules run there) and
    exits; a module may still be cleaning up then: see processes_using.

    What is under test is the state n3x leaves, not how ansible-playbook ends. If it has not
    ended after timeout, the user's next move is a second Ctrl-C: the test then records why it
    was still running (its process tree, each process's threads' kernel waits, and, through
    PYTHONFAULTHANDLER, ansible-playbook's own Python stacks in the job's log), ends it and the
    workers that outlive it, and warns with that record; the next run must still repair.
    """
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    record = stuck_record(proc.pid)
    os.kill(proc.pid, signal.SIGABRT)
    code = proc.wait(30)
    for pid in record["pids"]:
        with contextlib.suppress(OSError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
    log.flush()
    # With the other logs that CI keeps (scripts/test sets N3X_TEST_OUTPUT), else by the job's.
    logs = os.environ.get("N3X_TEST_OUTPUT")
    name = pathlib.Path(log.name)
    record_file = pathlib.Path(logs, "logs", f"interrupts-{name.stem}.stuck.txt") if logs else name.with_suffix(".stuck.txt")
    text = f"{os.path.basename(proc.args[0])} was still running {timeout} s after Ctrl-C (also in {record_file}):\n{record['text']}\nits log:\n{log_of(name)}"
    record_file.parent.mkdir(parents=True, exist_ok=True)
    record_file.write_text(text)
    warnings.warn(text, stacklevel=2)
    return code


def stuck_record(pid):
    """The process tree under pid, with each thread's kernel wait channel (and stack, as root)."""
    ps = ["ps", "-o", "pid,ppid,pgid,stat,etime,wchan:32,args", "--ppid", str(pid), "-p", str(pid)]
    tree = subprocess.run(ps, capture_output=True, text=True, check=False).stdout
    pids = [int(line.split()[0]) for line in tree.splitlines()[1:] if line.split()[0] != str(pid)]
    lines = [tree]
    for each in [pid, *pids]:
        for task in sorted(glob.glob(f"/proc/{each}/task/*")):
            try:
                wchan = pathlib.Path(task, "wchan").read_text()
                stack = pathlib.Path(task, "stack").read_text() if os.geteuid() == 0 else ""
            except OSError:
                continue
            lines.append(f"{task}: {wchan}\n{stack}")
    return {"pids": pids, "text": "\n".join(lines)}


def processes_using(path):
    """PIDs of live processes (not this one) with path on their command line or open."""
    found = []
    for proc_dir in glob.glob("/proc/[0-9]*"):
        pid = int(proc_dir.rsplit("/", 1)[1])
        if pid == os.getpid() or not lab._alive(pid):
            continue
        try:
            with open(f"{proc_dir}/cmdline", "rb") as fh:
                uses = path.encode() in fh.read()
            for fd in [] if uses else os.listdir(f"{proc_dir}/fd"):
                if os.readlink(f"{proc_dir}/fd/{fd}").startswith(path):
                    uses = True
                    break
        except OSError:
            continue
        if uses:
            found.append(pid)
    return found


def command_of(pid):
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def mounts_inside(path):
    return [point for point in img.mount_points_under(str(path), img._mountinfo()) if point != str(path)]


def log_of(path):
    return pathlib.Path(path).read_text(errors="replace")[-6000:]


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  children:\n    k3s_cluster:\n      hosts:\n" + "".join(f"        {n}:\n" for n in NODES))
    return path


def test_lab_up_interrupted_then_a_qemu_killed_then_lab_down(tmp_path, inventory):
    lab_dir = tmp_path / "lab"
    playbook = [str(BIN / "ansible-playbook"), "-i", str(inventory), "-e", f"lab_dir={lab_dir}"]
    up = [*playbook, "playbooks/lab.yml"]
    first, second = (lab.vm_paths(str(lab_dir), name) for name in NODES)
    try:
        with open(tmp_path / "1-interrupted.log", "w") as log:
            job = start(up, log)
            # The first VM's QEMU runs (its pidfile exists); the second is about to start.
            wait_for(lambda: os.path.exists(first["pid"]), 300, "the first VM's QEMU")
            assert ctrl_c(job, log) != 0
        with open(tmp_path / "2-repair.log", "w") as log:
            assert run(up, log) == 0, log_of(log.name)
        pids = {name: lab.running_pid(lab.vm_paths(str(lab_dir), name)) for name in NODES}
        assert all(pids.values()), pids

        os.kill(pids[NODES[0]], signal.SIGKILL)
        wait_for(lambda: not lab._alive(pids[NODES[0]]), 10, "the killed QEMU to end")
        with open(tmp_path / "3-after-kill.log", "w") as log:
            assert run(up, log) == 0, log_of(log.name)
        state = lab.read_state(first)
        assert "was killed" in state.get("replaced_disks", ""), state
        assert lab.running_pid(first) not in (None, pids[NODES[0]])
        assert lab.running_pid(second) == pids[NODES[1]], "the VM that was not killed was restarted"
        lab.wait_ssh(state["ssh_port"], 60)
    finally:
        with open(tmp_path / "4-down.log", "w") as log:
            down = run([*playbook, "playbooks/lab-destroy.yml"], log)
    assert down == 0, log_of(tmp_path / "4-down.log")
    assert not lab_dir.exists(), sorted(os.listdir(lab_dir))
    assert processes_using(str(lab_dir)) == []


def test_molecule_interrupted_while_its_vm_boots_then_destroyed(tmp_path):
    scenario = "l1-vm-boot"
    lab_dir = pathlib.Path.home() / ".cache" / "n3x" / "lab" / f"molecule-{scenario}"
    molecule = [str(BIN / "molecule")]
    with open(tmp_path / "molecule.log", "w") as log:
        started = time.time()
        job = start([*molecule, "test", "-s", scenario], log)
        # A pidfile of this run (`molecule test` first destroys what an earlier run left).
        wait_for(lambda: [p for p in glob.glob(str(lab_dir / "*.pid")) if os.path.getmtime(p) > started], 300, "the scenario's QEMU")
        assert ctrl_c(job, log) != 0
        assert run([*molecule, "destroy", "-s", scenario], log) == 0, log_of(log.name)
    assert not lab_dir.exists(), sorted(os.listdir(lab_dir))
    assert processes_using(str(lab_dir)) == []


def image_build(cache, log):
    return start([str(BIN / "ansible-playbook"), "playbooks/lab-image.yml", "-e", f"lab_image_cache_dir={cache}"], log)


def leftovers(cache):
    """What is in the cache besides the lock files and, after a failure, the build log."""
    return sorted(name for name in os.listdir(cache) if not name.endswith((".lock", ".build.log")))


def test_image_build_interrupted_while_mmdebstrap_has_mounts(tmp_path):
    cache = tmp_path / "images"
    with open(tmp_path / "build.log", "w") as log:
        job = image_build(cache, log)
        # mmdebstrap mounts /proc and /sys in the tree once the essential packages are in.
        wait_for(lambda: mounts_inside(cache), 600, "mmdebstrap's mounts in the build tree")
        assert ctrl_c(job, log) != 0
    # The module (in its worker's process group) lets mmdebstrap unmount, then removes the tree.
    wait_for(lambda: not processes_using(str(cache)), 90, "the interrupted build to clean up and end")
    assert mounts_inside(cache) == []
    assert leftovers(cache) == []
    assert glob.glob(str(cache / "*.build.log")) == [], "an interrupted build keeps no log"


def test_image_build_killed_then_the_next_build_removes_what_it_left(tmp_path):
    cache = tmp_path / "images"
    with open(tmp_path / "killed.log", "w") as log:
        job = image_build(cache, log)
        wait_for(lambda: mounts_inside(cache), 600, "mmdebstrap's mounts in the build tree")
        # SIGKILL to the module's process group (its worker's): nothing cleans up.
        mmdebstrap = wait_for(lambda: [pid for pid in processes_using(str(cache)) if "mmdebstrap" in command_of(pid)], 30, "mmdebstrap")
        os.killpg(os.getpgid(mmdebstrap[0]), signal.SIGKILL)
        job.wait(60)
    wait_for(lambda: not processes_using(str(cache)), 30, "the killed build's processes to end")
    left = glob.glob(str(cache / ".build-*"))
    assert left, "a killed build leaves its directory"
    assert mounts_inside(cache), "a killed mmdebstrap leaves its mounts"
    with open(tmp_path / "next.log", "w") as log:
        job = image_build(cache, log)
        # The next build removes the killed one's directory, then mounts in its own.
        wait_for(lambda: not any(os.path.exists(path) for path in left) and mounts_inside(cache), 600, "the next build to clean up and start")
        assert ctrl_c(job, log) != 0
    wait_for(lambda: not processes_using(str(cache)), 90, "the interrupted build to clean up and end")
    assert mounts_inside(cache) == []
    assert leftovers(cache) == []


@pytest.fixture
def small_cache(tmp_path):
    """A 64 MiB tmpfs as the image cache: a build runs out of space in it."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "n3x-full-disk-test", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=False)


def test_image_build_on_a_full_disk_fails_clearly(tmp_path, small_cache):
    with open(tmp_path / "build.log", "w") as log:
        assert image_build(small_cache, log).wait(900) != 0
    output = log_of(tmp_path / "build.log")
    flat = " ".join(output.split())  # Ansible wraps long messages
    assert f"no space left in {small_cache} while building the image (its filesystem holds 64 MiB" in flat, output
    assert "Traceback" not in output
    assert processes_using(str(small_cache)) == []
    assert mounts_inside(small_cache) == []
    assert leftovers(small_cache) == []
