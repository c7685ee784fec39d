"""Bundles checked by the real swupdate (Debian's 2022.12 build), with regular files as the slots.

swupdate installs the raw image to a file as it would to /dev/disk/by-partlabel/rootfs_b, so
these tests see exactly what it writes. When this host allows a private mount namespace (root),
swupdate runs with its GRUB interface (-B grub) and a grubenv of our own bind-mounted over
/boot, so the bootloader variables it sets are checked too; the host's /boot is never touched.
"""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_swupdate as swu

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
SWUPDATE = shutil.which("swupdate")
SLOT_SIZE = 512 * 1024
HARDWARE = "n3x-lab:1.0"

pytestmark = pytest.mark.skipif(SWUPDATE is None, reason="swupdate is not installed (apt-get install swupdate; scripts/bootstrap installs it)")


def grubenv_block(variables):
    text = "# GRUB Environment Block\n" + "".join(f"{k}={v}\n" for k, v in variables.items())
    return text.encode() + b"#" * (1024 - len(text))


def read_grubenv(path):
    lines = path.read_bytes().decode().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _namespaces_work():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind /tmp /mnt"], capture_output=True, check=False)
    return probe.returncode == 0


GRUB = _namespaces_work()


class Lab:
    """Two slot files, a grubenv and the keys; runs swupdate against them."""

    def __init__(self, root):
        self.root = root
        self.keys = root / "keys"
        self.key, self.cert = str(self.keys / "swupdate.key"), str(self.keys / "swupdate.crt")
        self.other_key, self.other_cert = str(self.keys / "other.key"), str(self.keys / "other.crt")
        swu.generate_signing_key(self.key, self.cert, bits=2048)
        swu.generate_signing_key(self.other_key, self.other_cert, common_name="somebody else", bits=2048)
        self.rootfs = root / "rootfs.ext4"
        self.rootfs.write_bytes(os.urandom(200 * 1024 + 3))
        self.boot = root / "boot"
        (self.boot / "grub").mkdir(parents=True)
        self.grubenv = self.boot / "grub" / "grubenv"
        self.reset()

    def slot(self, name):
        return self.root / f"slot_{name}"

    def reset(self):
        for name in swu.SLOTS:
            self.slot(name).write_bytes(b"\0" * SLOT_SIZE)
        self.grubenv.write_bytes(grubenv_block({"rootfs_slot": "a"}))

    def untouched(self):
        return all(self.slot(name).read_bytes() == b"\0" * SLOT_SIZE for name in swu.SLOTS) and read_grubenv(self.grubenv) == {"rootfs_slot": "a"}

    def bundle(self, name, hardware=(HARDWARE,), signer="lab", **kwargs):
        key, cert = {"lab": (self.key, self.cert), "other": (self.other_key, self.other_cert), None: (None, None)}[signer]
        dest = self.root / f"{name}.swu"
        images = [{"path": str(self.rootfs), "device": str(self.root / "slot_{slot}")}]
        swu.build_bundle(str(dest), "1.0.0", list(hardware), images, key=key, cert=cert, **kwargs)
        return dest

    def swupdate(self, bundle, selection="stable,slot_b", hardware=HARDWARE, check=False):
        args = [SWUPDATE, "-v", "-k", self.cert, "-H", hardware, "-e", selection, "-i", str(bundle)]
        if check:
            args.insert(1, "-c")
        if GRUB:
            args[1:1] = ["-B", "grub"]
            command = ["unshare", "-m", "sh", "-c", f'mount --bind "{self.boot}" /boot && exec "$@"', "sh", *args]
        else:
            command = args
        # swupdate keeps its sockets and scratch files in TMPDIR: a short private one per run.
        with tempfile.TemporaryDirectory(prefix="swu-") as scratch:
            outcome, output, runs = swu.run_install(command, timeout=180, env={**os.environ, "TMPDIR": scratch})
        output = "\n".join(line for line in output.splitlines() if "lua_report_exception" not in line)
        assert outcome != "interrupted", f"swupdate's start-up race struck {runs} times in a row:\n{output}"
        return outcome, output


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory):
    return tmp_path_factory.mktemp("swu")


@pytest.fixture
def lab(lab_root):
    if not hasattr(Lab, "_shared"):
        Lab._shared = Lab(lab_root)
    lab = Lab._shared
    lab.reset()
    return lab


def altered(source, dest, name, position, fix_checksum):
    """Copy a bundle with one byte of member `name` flipped, optionally with a matching cpio checksum."""
    data = bytearray(source.read_bytes())
    header, start, size = swu.member_span(data, name)
    data[start + position] ^= 0xFF
    if fix_checksum:
        data[header + 102 : header + 110] = b"%08X" % (sum(data[start : start + size]) & 0xFFFFFFFF)
    dest.write_bytes(bytes(data))
    return dest


def test_valid_signed_bundle_installs_to_the_inactive_slot(lab):
    outcome, output = lab.swupdate(lab.bundle("good"))
    assert outcome == "successful", output
    assert "Verified OK" in output
    assert "Hardware compatibility verified" in output
    assert "SWUpdate was successful" in output
    image = lab.rootfs.read_bytes()
    written = lab.slot("b").read_bytes()
    assert written[: len(image)] == image
    assert written[len(image) :] == b"\0" * (SLOT_SIZE - len(image))
    assert lab.slot("a").read_bytes() == b"\0" * SLOT_SIZE
    if GRUB:
        env = read_grubenv(lab.grubenv)
        assert env["rootfs_slot"] == "b"
        assert env["rootfs_fallback"] == "a"
        assert env["upgrade_available"] == "1"
        assert env["boot_count"] == "0"


def test_the_same_bundle_installs_to_slot_a_when_b_is_active(lab):
    outcome, output = lab.swupdate(lab.bundle("good"), selection="stable,slot_a")
    assert outcome == "successful", output
    assert lab.slot("a").read_bytes().startswith(lab.rootfs.read_bytes())
    assert lab.slot("b").read_bytes() == b"\0" * SLOT_SIZE
    if GRUB:
        assert read_grubenv(lab.grubenv)["rootfs_slot"] == "a"
        assert read_grubenv(lab.grubenv)["rootfs_fallback"] == "b"


def test_check_mode_accepts_a_valid_bundle_and_writes_nothing(lab):
    outcome, output = lab.swupdate(lab.bundle("good"), check=True)
    assert outcome == "successful", output
    assert "Verified OK" in output
    assert lab.untouched()


def test_a_bundle_for_one_slot_cannot_install_to_the_other(lab):
    bundle = lab.bundle("only-b", slot="inactive", active_slot="a")
    outcome, output = lab.swupdate(bundle, selection="stable,slot_a")
    assert outcome == "failed", output
    assert lab.untouched()
    outcome, output = lab.swupdate(bundle, selection="stable,slot_b")
    assert outcome == "successful", output


def _rejections(lab):
    good = lab.bundle("good")
    edited = bytearray(good.read_bytes())
    header, start, size = swu.member_span(edited, "sw-description")
    text = bytes(edited[start : start + size])
    assert b'version = "1.0.0"' in text
    edited[start : start + size] = text.replace(b'version = "1.0.0"', b'version = "9.9.9"')
    edited[header + 102 : header + 110] = b"%08X" % (sum(edited[start : start + size]) & 0xFFFFFFFF)
    (lab.root / "description-edited.swu").write_bytes(bytes(edited))
    return {
        "unsigned": (lab.bundle("unsigned", signer=None), "description file name not the first of the list"),
        "image altered after signing": (altered(good, lab.root / "flipped.swu", "rootfs.ext4", 1000, fix_checksum=False), "HASH mismatch"),
        "image altered, cpio checksum fixed": (altered(good, lab.root / "flipped-crc.swu", "rootfs.ext4", 77, fix_checksum=True), "HASH mismatch"),
        "sw-description altered after signing": (lab.root / "description-edited.swu", "signature"),
        "signed by another key": (lab.bundle("other-key", signer="other"), "Authentication of all signatures failed"),
        "other hardware revision": (lab.bundle("other-revision", hardware=("n3x-lab:2.0",)), "SW not compatible with hardware"),
        "other board": (lab.bundle("other-board", hardware=("jetson-orin:1.0",)), "HW compatibility not found"),
    }


REJECTED = [
    "unsigned",
    "image altered after signing",
    "image altered, cpio checksum fixed",
    "sw-description altered after signing",
    "signed by another key",
    "other hardware revision",
    "other board",
]


@pytest.mark.parametrize("case", REJECTED)
def test_bad_bundles_are_rejected_and_nothing_is_written(lab, case):
    bundle, reason = _rejections(lab)[case]
    lab.reset()
    outcome, output = lab.swupdate(bundle)
    assert outcome == "failed", output
    assert "[ERROR]" in output
    assert reason.lower() in output.lower(), output
    assert lab.untouched(), output


# --- the Ansible surface -------------------------------------------------------------


def ansible(args, cwd=REPO):
    env = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
    }
    result = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_role_and_module_build_a_bundle_that_swupdate_accepts(lab, tmp_path):
    keys = tmp_path / "keys"
    rootfs = tmp_path / "rootfs.ext4"
    rootfs.write_bytes(lab.rootfs.read_bytes())
    playbook = tmp_path / "bundle.yml"
    playbook.write_text(
        f"""---
- name: Build a bundle
  hosts: localhost
  gather_facts: false
  roles:
    - role: n3x.cluster.swupdate_keys
      vars:
        swupdate_keys_dir: {keys}
        swupdate_keys_bits: 2048
  tasks:
    - name: Bundle
      n3x.cluster.swupdate_bundle:
        dest: {tmp_path}/out.swu
        version: 2.0.0
        hardware: ["{HARDWARE}"]
        images:
          - path: {rootfs}
            device: "{lab.root}/slot_{{slot}}"
        signing_key: "{{{{ swupdate_keys_paths.key }}}}"
        signing_cert: "{{{{ swupdate_keys_paths.cert }}}}"
"""
    )
    first = ansible(["ansible-playbook", "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)])
    assert first["stats"]["localhost"]["changed"] >= 2
    assert (keys / "swupdate.key").stat().st_mode & 0o777 == 0o600
    assert keys.stat().st_mode & 0o777 == 0o700
    digest = hashlib.sha256((tmp_path / "out.swu").read_bytes()).hexdigest()
    second = ansible(["ansible-playbook", "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)])
    assert second["stats"]["localhost"]["changed"] == 0
    assert hashlib.sha256((tmp_path / "out.swu").read_bytes()).hexdigest() == digest
    key_text = (keys / "swupdate.key").read_text()
    body = key_text.splitlines()[1]
    assert body not in json.dumps(first) + json.dumps(second)
    lab.cert, saved = str(keys / "swupdate.crt"), lab.cert
    try:
        outcome, output = lab.swupdate(tmp_path / "out.swu")
    finally:
        lab.cert = saved
    assert outcome == "successful", output
    assert lab.slot("b").read_bytes().startswith(rootfs.read_bytes())
