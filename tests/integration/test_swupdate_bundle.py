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
CLIENT = shutil.which("swupdate-client")
SLOT_SIZE = 512 * 1024
HARDWARE = "n3x-lab:1.0"

pytestmark = pytest.mark.skipif(
    SWUPDATE is None or CLIENT is None, reason="swupdate is not installed (apt-get install swupdate; scripts/bootstrap installs it)"
)


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

    def swupdate(self, bundle, selection="stable,slot_b", hardware=HARDWARE, check=False, aes_key=None):
        """Install (or with check, dry-run) `bundle` through a swupdate daemon; (outcome, log)."""
        args = [SWUPDATE, "-v", "-k", self.cert, "-H", hardware, "-e", selection]
        if aes_key:
            args[1:1] = ["-K", aes_key]
        if GRUB:
            args[1:1] = ["-B", "grub"]
            command = ["unshare", "-m", "sh", "-c", f'mount --bind "{self.boot}" /boot && exec "$@"', "sh", *args]
        else:
            command = args
        # swupdate keeps its sockets and scratch files in TMPDIR: a short private one per run.
        with tempfile.TemporaryDirectory(prefix="swu-") as scratch:
            outcome, output = swu.install_via_daemon(command, str(bundle), dry_run=check, client=CLIENT, env={**os.environ, "TMPDIR": scratch}, timeout=180)
        output = "\n".join(line for line in output.splitlines() if "lua_report_exception" not in line)
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
    assert "SWUPDATE successful" in output
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


def keys_playbook(path, keys, legacy, tasks=""):
    """A playbook that runs the keys role with a key directory of its own, then `tasks`."""
    path.write_text(
        f"""---
- name: Keys
  hosts: localhost
  gather_facts: false
  roles:
    - role: n3x.cluster.swupdate_keys
      vars:
        swupdate_keys_dir: {keys}
        swupdate_keys_bits: 2048
        swupdate_keys_legacy_dirs: [{legacy}]
{tasks}"""
    )
    return path


@pytest.mark.parametrize("where", ["cache", "legacy"])
def test_the_keys_role_refuses_a_cache_and_keys_left_in_the_old_cache(tmp_path, where):
    home = tmp_path / "home"
    legacy = home / ".cache" / "n3x" / "swupdate-keys"
    legacy.mkdir(parents=True)
    if where == "legacy":
        swu.generate_signing_key(str(legacy / "swupdate.key"), str(legacy / "swupdate.crt"), bits=2048)
    keys = legacy if where == "cache" else home / ".local" / "share" / "n3x" / "swupdate-keys"
    playbook = keys_playbook(tmp_path / "keys.yml", keys, legacy)
    env_home = {"HOME": str(home)}
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
        cwd=REPO, env={**os.environ, **env_home, "ANSIBLE_NOCOLOR": "1"}, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = " ".join(result.stdout.split())
    assert result.returncode == 2, result.stdout[-3000:]
    assert ("inside the cache directory" if where == "cache" else "Move them to") in output
    assert not (home / ".local").exists()
    assert sorted(p.name for p in legacy.iterdir()) == ([] if where == "cache" else ["swupdate.crt", "swupdate.key"])


def test_role_and_module_build_a_bundle_that_swupdate_accepts(lab, tmp_path):
    keys = tmp_path / "keys"
    rootfs = tmp_path / "rootfs.ext4"
    rootfs.write_bytes(lab.rootfs.read_bytes())
    playbook = keys_playbook(
        tmp_path / "bundle.yml",
        keys,
        tmp_path / "legacy",
        f"""  tasks:
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
        preserve: []
""",
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


# --- compressed, encrypted and delta bundles ------------------------------------------

ZCK = shutil.which("zck")


def image_like(path, size=SLOT_SIZE // 2):
    """Compressible, image-like bytes: runs of zeros between random blocks."""
    blocks = [os.urandom(4096) if n % 3 else b"\0" * 4096 for n in range(size // 4096)]
    path.write_bytes(b"".join(blocks))
    return path


def test_a_compressed_bundle_installs_and_swupdate_checks_what_it_wrote(lab):
    image = image_like(lab.root / "compressible.ext4")
    bundle = lab.root / "compressed.swu"
    result = swu.build_bundle(str(bundle), "2.0.0", [HARDWARE], [{"path": str(image), "device": str(lab.root / "slot_{slot}")}],
                              key=lab.key, cert=lab.cert, compression="zstd", boot_attempts=2)  # fmt: skip
    assert result["members"][2] == "compressible.ext4.zst"
    assert result["size"] < image.stat().st_size * 0.75
    outcome, output = lab.swupdate(bundle)
    assert outcome == "successful", output
    assert "Readback verification success" in output
    assert lab.slot("b").read_bytes()[: image.stat().st_size] == image.read_bytes()
    if GRUB:
        env = read_grubenv(lab.grubenv)
        assert env["rootfs_b_image"] == hashlib.sha256(image.read_bytes()).hexdigest()
        assert (env["rootfs_b_version"], env["boot_attempts"], env["ustate"]) == ("2.0.0", "2", "1")


def test_a_slot_that_reads_back_wrong_is_never_switched_to(lab, tmp_path):
    image = image_like(lab.root / "compressible.ext4")
    images = [{"name": "compressible.ext4", "path": str(image), "device": str(lab.root / "slot_{slot}")}]
    prepared = swu.prepare_image(images[0], str(tmp_path))
    # A readback sha256 that is not the image's (as if the slot lost a write): swupdate writes
    # the image, its readback script fails, and the bootloader variables stay as they were.
    prepared["written_sha256"] = "12" * 32
    text = swu.render_sw_description("2.0.0", [HARDWARE], [prepared], ("b",))
    with open(lab.root / "bad-readback.swu", "wb") as out:
        swu.write_cpio(out, [("sw-description", text.encode()), ("sw-description.sig", swu.cms_sign(text.encode(), lab.key, lab.cert)),
                             (prepared["member"], {"path": prepared["artifact"]})])  # fmt: skip
    outcome, output = lab.swupdate(lab.root / "bad-readback.swu")
    assert outcome == "failed", output
    assert "execute postinstall scripts failed" in output, output
    if GRUB:
        # Slot a still boots; swupdate's markers record the failed update (core/stream_interface.c).
        assert read_grubenv(lab.grubenv) == {"rootfs_slot": "a", "recovery_status": "failed", "ustate": "3"}


def test_an_encrypted_bundle_needs_the_aes_key(lab):
    image = image_like(lab.root / "secret.ext4")
    aes = lab.root / "aes.key"
    if not aes.exists():
        swu.generate_aes_key(str(aes))
    bundle = lab.root / "encrypted.swu"
    result = swu.build_bundle(str(bundle), "3.0.0", [HARDWARE], [{"path": str(image), "device": str(lab.root / "slot_{slot}")}],
                              key=lab.key, cert=lab.cert, compression="zstd", aes_key=str(aes))  # fmt: skip
    assert result["images"][0]["encrypted"]
    assert image.read_bytes()[8192 : 8192 + 64] not in bundle.read_bytes()
    outcome, output = lab.swupdate(bundle)
    assert outcome == "failed", output
    lab.reset()
    other = lab.root / "other-aes.key"
    if not other.exists():
        swu.generate_aes_key(str(other))
    outcome, output = lab.swupdate(bundle, aes_key=str(other))
    assert outcome == "failed", output
    if GRUB:
        assert read_grubenv(lab.grubenv)["rootfs_slot"] == "a"
    lab.reset()
    outcome, output = lab.swupdate(bundle, aes_key=str(aes))
    assert outcome == "successful", output
    assert "Readback verification success" in output
    assert lab.slot("b").read_bytes()[: image.stat().st_size] == image.read_bytes()


@pytest.mark.skipif(ZCK is None, reason="zchunk is not installed (apt-get install zchunk)")
@pytest.mark.skipif(not GRUB, reason="the delta base check reads grubenv, which needs a private mount namespace (root)")
def test_a_delta_fetches_only_the_chunks_the_running_slot_lacks(lab):
    from ansible_collections.n3x.cluster.plugins.module_utils.n3x_update_server import UpdateServer

    base = image_like(lab.root / "base.ext4", 4 * 1024 * 1024)
    new = lab.root / "new.ext4"
    data = bytearray(base.read_bytes())
    data[100000:100016] = b"one package more"
    new.write_bytes(bytes(data))
    lab.slot("a").write_bytes(base.read_bytes())
    served = lab.root / "served"
    served.mkdir(exist_ok=True)
    with UpdateServer(served) as server:
        bundle = lab.root / "delta.swu"
        result = swu.build_bundle(
            str(bundle), "2.1.0", [HARDWARE], [{"path": str(new), "device": str(lab.root / "slot_{slot}"), "delta_base": str(base)}],
            key=lab.key, cert=lab.cert, delta_url=f"http://127.0.0.1:{server.port}/", delta_dir=str(served),
        )  # fmt: skip
        base_sha = hashlib.sha256(base.read_bytes()).hexdigest()
        # The slot it runs holds another image: refused before anything is fetched or written.
        lab.grubenv.write_bytes(grubenv_block({"rootfs_slot": "a", "rootfs_a_image": "ab" * 32}))
        outcome, output = lab.swupdate(bundle)
        assert outcome == "failed", output
        assert "n3x: delta base mismatch" in output
        assert server.sent == {}
        assert lab.slot("b").read_bytes() == b"\0" * SLOT_SIZE
        lab.grubenv.write_bytes(grubenv_block({"rootfs_slot": "a", "rootfs_a_image": base_sha}))
        server.httpd.sent.clear()
        outcome, output = lab.swupdate(bundle)
        assert outcome == "successful", output
        # The delta handler checks every chunk's sha256; no second pass over the slot.
        assert "readback" not in swu.bundle_description(str(bundle))
        fetched = sum(server.sent.values())
    assert lab.slot("b").read_bytes()[: new.stat().st_size] == new.read_bytes()
    assert 0 < fetched < new.stat().st_size / 8, f"fetched {fetched} of {new.stat().st_size} bytes"
    assert result["size"] < new.stat().st_size / 8
    assert read_grubenv(lab.grubenv)["rootfs_b_image"] == hashlib.sha256(new.read_bytes()).hexdigest()
