"""SWUpdate bundles: sw-description, the cpio CRC format, slot choice, reproducible bytes."""

import hashlib
import io
import os
import pathlib
import shutil
import subprocess
import time

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_swupdate as swu

SHA = "ab" * 32
OPENSSL = shutil.which("openssl")


def image(name="rootfs.ext4", device=swu.DEFAULT_DEVICE):
    return {"name": name, "device": device, "sha256": SHA}


# --- slots ---------------------------------------------------------------------------


@pytest.mark.parametrize(("active", "inactive"), [("a", "b"), ("b", "a")])
def test_inactive_slot(active, inactive):
    assert swu.inactive_slot(active) == inactive
    assert swu.resolve_slots("inactive", active) == (inactive,)


@pytest.mark.parametrize(("slot", "active", "expected"), [("both", None, ("a", "b")), ("a", None, ("a",)), ("b", None, ("b",))])
def test_resolve_slots(slot, active, expected):
    assert swu.resolve_slots(slot, active) == expected


@pytest.mark.parametrize(
    ("slot", "active", "message"),
    [("inactive", None, "needs active_slot"), ("inactive", "c", "not one of"), ("b", "a", "only used with"), ("c", None, "not one of")],
)
def test_resolve_slots_refuses(slot, active, message):
    with pytest.raises(swu.SwupdateError, match=message):
        swu.resolve_slots(slot, active)


def test_selection():
    assert swu.selection("b") == "stable,slot_b"


# --- sw-description ------------------------------------------------------------------


def test_sw_description_both_slots():
    text = swu.render_sw_description("1.4.0", ["n3x-lab:1.0", "n3x-lab:1.1", "n100:2"], [image()], description="lab rootfs")
    assert text.startswith('software =\n{\n\tversion = "1.4.0";\n\tdescription = "lab rootfs";\n')
    assert '\tn3x-lab = {\n\t\thardware-compatibility = [ "1.0", "1.1" ];\n\t\tstable = {\n\t\t\tslot_a = {' in text
    assert '\tn100 = {\n\t\thardware-compatibility = [ "2" ];' in text
    for slot, other in (("a", "b"), ("b", "a")):
        assert f'device = "/dev/disk/by-partlabel/rootfs_{slot}";' in text
        assert f'{{ name = "rootfs_slot"; value = "{slot}"; }}' in text
        assert f'{{ name = "rootfs_fallback"; value = "{other}"; }}' in text
    assert text.count('type = "raw";') == 4  # one image, two slots, two boards
    assert text.count(f'sha256 = "{SHA}";') == 4
    assert text.count('{ name = "upgrade_available"; value = "1"; }') == 4
    assert text.count('{ name = "boot_count"; value = "0"; }') == 4
    assert "compressed" not in text
    assert text.count("{") == text.count("}")
    assert text.count("(") == text.count(")")


def test_sw_description_one_slot_only():
    text = swu.render_sw_description("1", ["lab:1"], [image(device="/dev/vda{slot}")], slots=("b",))
    assert "slot_a" not in text
    assert 'device = "/dev/vdab";' in text


def test_sw_description_exact_text():
    text = swu.render_sw_description("2", ["lab:r1"], [image("root.img")], slots=("a",))
    assert text == (
        "software =\n{\n"
        '\tversion = "2";\n\n'
        "\tlab = {\n"
        '\t\thardware-compatibility = [ "r1" ];\n'
        "\t\tstable = {\n"
        "\t\t\tslot_a = {\n"
        "\t\t\t\timages: (\n"
        "\t\t\t\t\t{\n"
        '\t\t\t\t\t\tfilename = "root.img";\n'
        '\t\t\t\t\t\tdevice = "/dev/disk/by-partlabel/rootfs_a";\n'
        '\t\t\t\t\t\ttype = "raw";\n'
        f'\t\t\t\t\t\tsha256 = "{SHA}";\n'
        "\t\t\t\t\t}\n"
        "\t\t\t\t);\n"
        "\t\t\t\tbootenv: (\n"
        '\t\t\t\t\t{ name = "rootfs_slot"; value = "a"; },\n'
        '\t\t\t\t\t{ name = "rootfs_fallback"; value = "b"; },\n'
        '\t\t\t\t\t{ name = "upgrade_available"; value = "1"; },\n'
        '\t\t\t\t\t{ name = "boot_count"; value = "0"; }\n'
        "\t\t\t\t);\n"
        "\t\t\t};\n"
        "\t\t};\n"
        "\t};\n"
        "};\n"
    )


@pytest.mark.parametrize(
    ("hardware", "message"),
    [
        ([], "at least one"),
        (["lab"], "not board:revision"),
        (["lab:"], "not board:revision"),
        (["1lab:1"], "must start with a letter"),
        (["images:1"], "swupdate keyword"),
        (["slot_a:1"], "swupdate keyword"),
        (['lab:1"'], "quote"),
    ],
)
def test_hardware_refused(hardware, message):
    with pytest.raises(swu.SwupdateError, match=message):
        swu.render_sw_description("1", hardware, [image()])


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ([], "at least one"),
        ([image("sw-description")], "plain file name"),
        ([image("../x")], "plain file name"),
        ([image(), image()], "appears twice"),
        ([image(device="/dev/vda2")], "must contain"),
        ([{**image(), "sha256": "xyz"}], "sha256"),
    ],
)
def test_images_refused(images, message):
    with pytest.raises(swu.SwupdateError, match=message):
        swu.render_sw_description("1", ["lab:1"], images)


@pytest.mark.parametrize("version", [" ", '1"; evil = "x', "1.0\n", "1 0", "-1", "x" * 65, ""])
def test_version_must_be_a_plain_token(version):
    # It goes into sw-description and the GRUB environment (rootfs_<slot>_version).
    with pytest.raises(swu.SwupdateError, match="version"):
        swu.render_sw_description(version, ["lab:1"], [image()])


def test_quotes_refused_in_descriptions():
    with pytest.raises(swu.SwupdateError, match="quotes"):
        swu.render_sw_description("1", ["lab:1"], [image()], description='a"; evil = "x')


# --- cpio ----------------------------------------------------------------------------


def test_cpio_crc_format_round_trip(tmp_path):
    big = tmp_path / "rootfs.img"
    big.write_bytes(bytes(range(256)) * 4099 + b"odd")
    out = io.BytesIO()
    swu.write_cpio(out, [("sw-description", b"software = {};\n"), ("sw-description.sig", b"\x01\xff" * 3), ("rootfs.img", {"path": str(big)})])
    data = out.getvalue()
    assert len(data) % 4 == 0
    assert data.startswith(b"070702")
    members = swu.read_cpio(data)
    assert [m["name"] for m in members] == ["sw-description", "sw-description.sig", "rootfs.img"]
    assert members[2]["data"] == big.read_bytes()
    for member in members:
        assert member["checksum"] == sum(member["data"]) & 0xFFFFFFFF
        assert member["mode"] == 0o100644
        assert member["mtime"] == 0
    assert [m["ino"] for m in members] == [1, 2, 3]
    assert data.count(b"070702") >= 4
    assert b"TRAILER!!!\0" in data[-128:]
    # header layout: magic, 13 fields of 8 hex digits, name, NUL, padding to 4
    header = data[:110]
    assert int(header[94:102], 16) == len("sw-description") + 1
    assert data[110:125] == b"sw-description\0"


def test_cpio_checksum_wraps_at_32_bits():
    out = io.BytesIO()
    content = b"\xff" * (2**24 + 17)  # the byte sum exceeds 2**32
    swu.write_cpio(out, [("big", content)])
    member = swu.read_cpio(out.getvalue())[0]
    assert member["checksum"] == (255 * len(content)) & 0xFFFFFFFF


def test_read_cpio_detects_corruption():
    out = io.BytesIO()
    swu.write_cpio(out, [("a", b"hello")])
    data = bytearray(out.getvalue())
    data[data.index(b"hello")] ^= 1
    with pytest.raises(swu.SwupdateError, match="checksum mismatch"):
        swu.read_cpio(bytes(data))
    with pytest.raises(swu.SwupdateError, match="bad magic"):
        swu.read_cpio(b"070701" + bytes(data[6:]))


# --- bundles (openssl) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    if not OPENSSL:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("keys") / "private"
    key, cert = str(directory / "swupdate.key"), str(directory / "swupdate.crt")
    assert swu.generate_signing_key(key, cert, bits=2048) is True
    return key, cert


def test_generated_key_is_private_and_kept(keys):
    key, cert = keys
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(key)).st_mode & 0o777 == 0o700
    before = open(key, "rb").read()  # noqa: SIM115
    assert swu.generate_signing_key(key, cert) is False
    assert open(key, "rb").read() == before  # noqa: SIM115


def test_key_readable_by_others_is_refused(keys, tmp_path):
    loose = tmp_path / "loose.key"
    shutil.copy(keys[0], loose)
    loose.chmod(0o640)
    with pytest.raises(swu.SwupdateError, match="must be 0600") as caught:
        swu.cms_sign(b"x", str(loose), keys[1])
    assert "PRIVATE" not in str(caught.value)


def test_bundle_is_reproducible_and_signed(keys, tmp_path):
    key, cert = keys
    rootfs = tmp_path / "rootfs.ext4"
    rootfs.write_bytes(os.urandom(65537))
    args = {"version": "1.0", "hardware": ["lab:1.0"], "images": [{"path": str(rootfs)}], "key": key, "cert": cert}
    first = swu.build_bundle(str(tmp_path / "one.swu"), **args)
    second = swu.build_bundle(str(tmp_path / "two.swu"), **args)
    assert first["changed"]
    assert second["changed"]
    assert (tmp_path / "one.swu").read_bytes() == (tmp_path / "two.swu").read_bytes()
    again = swu.build_bundle(str(tmp_path / "one.swu"), **args)
    assert again["changed"] is False
    assert again["sha256"] == hashlib.sha256((tmp_path / "one.swu").read_bytes()).hexdigest()
    members = swu.read_cpio((tmp_path / "one.swu").read_bytes())
    assert [m["name"] for m in members] == ["sw-description", "sw-description.sig", "rootfs.ext4"]
    assert hashlib.sha256(rootfs.read_bytes()).hexdigest() in members[0]["data"].decode()
    assert swu.cms_verify(members[0]["data"], members[1]["data"], cert)
    assert not swu.cms_verify(members[0]["data"] + b" ", members[1]["data"], cert)
    assert first["selections"] == {"a": "stable,slot_a", "b": "stable,slot_b"}
    # a new image changes the bundle; check mode reports it without writing
    rootfs.write_bytes(b"new")
    before = (tmp_path / "one.swu").read_bytes()
    checked = swu.build_bundle(str(tmp_path / "one.swu"), check_mode=True, **args)
    assert checked["changed"] is True
    assert (tmp_path / "one.swu").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".n3x-swu-")]


def test_unsigned_bundle_has_no_signature(tmp_path):
    rootfs = tmp_path / "r.img"
    rootfs.write_bytes(b"x" * 10)
    result = swu.build_bundle(str(tmp_path / "u.swu"), "1", ["lab:1"], [{"path": str(rootfs)}], slot="inactive", active_slot="b")
    assert result["members"] == ["sw-description", "r.img"]
    assert result["slots"] == ["a"]
    assert result["signed"] is False


SUCCESS_LINE = "[INFO ] : SWUPDATE running :  [endupdate] : SWUpdate was successful !"


@pytest.mark.parametrize(
    ("output", "returncode", "outcome"),
    [
        (f"[INFO ] : SWUPDATE successful ! SWUPDATE successful !\n{SUCCESS_LINE}", 0, "successful"),
        # the client read IDLE before the installer started: nothing is proven
        (f"{SUCCESS_LINE}\n[ERROR] : SWUPDATE failed [0] ERROR : /tmp/swu-x/sw-description.sig cannot be opened", 1, "interrupted"),
        (f"{SUCCESS_LINE}\n", 1, "interrupted"),
        ("[ERROR] : SWUPDATE failed [0] ERROR : HASH mismatch\n[ERROR] : SWUPDATE failed [0] ERROR : SWUpdate *failed* !", 1, "failed"),
        ("[ERROR] : SWUPDATE failed [0] ERROR : SWUpdate *failed* !", 1, "failed"),
        (f"[ERROR] : SWUPDATE failed [0] ERROR : HASH mismatch\n{SUCCESS_LINE}", 0, "failed"),
        ("SWUpdate v\n", 1, "failed"),
        # swupdate -d: only the installer reports
        ("[INFO ] : SWUPDATE successful ! SWUPDATE successful !\nChild 206(download) exited, status=0", 0, "successful"),
        ("[INFO ] : SWUPDATE successful ! SWUPDATE successful !\n", 1, "failed"),
        ("[ERROR] : SWUPDATE failed [0] ERROR : HASH mismatch\n", 0, "failed"),
        ("SWUpdate v\n", 0, "failed"),
    ],
)
def test_install_outcome(output, returncode, outcome):
    assert swu.install_outcome(output, returncode) == outcome


def test_run_install_runs_again_only_after_the_start_up_race(tmp_path):
    counter = tmp_path / "runs"
    script = tmp_path / "racing-swupdate"
    # a shell stand-in for the race itself: interrupted twice, then a real outcome
    script.write_text(
        f"""#!/bin/sh
n=$(cat {counter} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {counter}
echo "{SUCCESS_LINE}"
[ $n -ge 3 ] && exit 0
exit 1
"""
    )
    script.chmod(0o755)
    assert swu.run_install([str(script)]) == ("successful", SUCCESS_LINE + "\n", 3)
    counter.unlink()
    outcome, _, runs = swu.run_install([str(script)], attempts=2)
    assert (outcome, runs) == ("interrupted", 2)


# --- on the device -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmdline", "slot"),
    [("root=PARTLABEL=rootfs_a rw console=ttyS0", "a"), ("quiet root=PARTLABEL=rootfs_b\n", "b"), ("BOOT_IMAGE=x root=PARTLABEL=rootfs_b panic=5", "b")],
)
def test_running_slot_from_the_kernel_command_line(cmdline, slot):
    assert swu.running_slot(cmdline) == slot


@pytest.mark.parametrize("cmdline", ["root=LABEL=n3x-root rw", "root=PARTLABEL=rootfs_c", "xroot=PARTLABEL=rootfs_a", ""])
def test_running_slot_refuses_other_roots(cmdline):
    with pytest.raises(swu.SwupdateError, match="running slot"):
        swu.running_slot(cmdline)


def test_parse_grubenv_file_and_editenv_list():
    block = b"# GRUB Environment Block\nrootfs_slot=b\nboot_count=0\n" + b"#" * 900
    assert swu.parse_grubenv(block.decode()) == {"rootfs_slot": "b", "boot_count": "0"}
    assert swu.parse_grubenv("upgrade_available=1\nx=a=b\n") == {"upgrade_available": "1", "x": "a=b"}


def test_install_argv():
    argv = swu.install_argv("stable,slot_b", bundle="/data/u.swu")
    assert argv == ["swupdate", "-B", "grub", "-v", "-k", swu.DEFAULT_PUBLIC_KEY, "-e", "stable,slot_b", "-i", "/data/u.swu"]
    argv = swu.install_argv("stable,slot_a", "/k.crt", url="http://10.0.2.2:8000/u.swu", hardware="n3x-lab:1.0", bootloader=None)
    assert argv == ["swupdate", "-v", "-k", "/k.crt", "-e", "stable,slot_a", "-H", "n3x-lab:1.0", "-d", "-u http://10.0.2.2:8000/u.swu"]
    assert swu.install_argv("stable,slot_a", bundle="/b", check=True)[-3:] == ["-c", "-i", "/b"]
    for bad in ({}, {"bundle": "/b", "url": "http://x/"}, {"url": "http://x/ -v"}, {"url": "http://x/", "check": True}):
        with pytest.raises(swu.SwupdateError):
            swu.install_argv("stable,slot_a", **bad)


def test_member_span_finds_members_of_a_built_bundle(tmp_path):
    rootfs = tmp_path / "r.img"
    rootfs.write_bytes(b"payload-bytes")
    swu.build_bundle(str(tmp_path / "b.swu"), "1", ["lab:1"], [{"path": str(rootfs)}], slot="inactive", active_slot="a")
    data = (tmp_path / "b.swu").read_bytes()
    header, start, size = swu.member_span(data, "r.img")
    assert data[start : start + size] == b"payload-bytes"
    assert data[header : header + 6] == b"070702"
    assert swu.member_span(data, "sw-description")[0] == 0
    with pytest.raises(KeyError):
        swu.member_span(data, "missing")


def test_run_install_waits_for_swupdate_not_for_a_helper_holding_its_output(tmp_path):
    """swupdate exited 1 after 'SWUpdate *failed*' while a helper it forked kept the output
    open: the run ends with swupdate, and the helper does not outlive it."""
    script = tmp_path / "swupdate-with-helper"
    script.write_text(f'#!/bin/sh\nsleep 300 &\necho $! > "{tmp_path}/helper"\necho "[ERROR] : SWUPDATE failed [0] ERROR : SWUpdate *failed* !"\nexit 1\n')
    script.chmod(0o755)
    started = time.monotonic()
    outcome, output, runs = swu.run_install([str(script)], timeout=60)
    assert (outcome, runs) == ("failed", 1)
    assert "SWUpdate *failed*" in output
    assert time.monotonic() - started < 15
    helper = int((tmp_path / "helper").read_text())
    try:
        with open(f"/proc/{helper}/stat") as stat:
            assert stat.read().split(") ", 1)[1][0] == "Z"  # killed, waiting to be reaped
    except FileNotFoundError:
        pass  # killed and reaped


def test_run_install_that_never_finishes_is_failed_with_the_reason(tmp_path):
    script = tmp_path / "swupdate-hangs"
    script.write_text("#!/bin/sh\necho started\nexec sleep 300\n")
    script.chmod(0o755)
    outcome, output, runs = swu.run_install([str(script)], timeout=1)
    assert (outcome, runs) == ("failed", 1)
    assert output.startswith("started\n")
    assert "did not finish within 1 s" in output


# --- compressed, encrypted and delta images ---------------------------------------------

ZSTD = shutil.which("zstd")
ZCK = shutil.which("zck")


def prepared(**overrides):
    """A prepared image (prepare_image's result) without running any tool."""
    return {
        "name": "rootfs.ext4",
        "device": swu.DEFAULT_DEVICE,
        "member": "rootfs.ext4.zst",
        "sha256": SHA,
        "written_sha256": "cd" * 32,
        "written_size": 4096,
        "compressed": "zstd",
        "encrypted": False,
    } | overrides


def test_compressed_image_entry_and_readback_of_what_is_written():
    text = swu.render_sw_description("2.0.0", ["lab:1"], [prepared()], slots=("b",), boot_attempts=3)
    assert '\t\t\t\t\t\tfilename = "rootfs.ext4.zst";\n' in text
    assert '\t\t\t\t\t\tcompressed = "zstd";\n' in text
    # sha256 of the artifact in the bundle (what swupdate hashes as it reads it) ...
    assert f'\t\t\t\t\t\tsha256 = "{SHA}";\n' in text
    # ... and, for the readback script, of the image written to the slot.
    assert 'type = "readback";' in text
    assert f'sha256 = "{"cd" * 32}";' in text
    assert 'size = "4096";' in text
    assert '{ name = "rootfs_b_image"; value = "' + "cd" * 32 + '"; }' in text
    assert '{ name = "rootfs_b_version"; value = "2.0.0"; }' in text
    assert '{ name = "boot_attempts"; value = "3"; }' in text
    assert "encrypted" not in text
    assert text.count("{") == text.count("}")


def test_encrypted_image_entry():
    text = swu.render_sw_description("1", ["lab:1"], [prepared(encrypted=True, ivt="0f" * 16, member="rootfs.ext4.zst.enc")], slots=("a",))
    assert '\t\t\t\t\t\tencrypted = true;\n\t\t\t\t\t\tivt = "' + "0f" * 16 + '";\n' in text


def test_delta_image_entry_chains_to_raw_from_the_running_slot():
    delta = {"url": "http://10.0.2.2:8080/rootfs.ext4-x.zck", "base_sha256": "ef" * 32}
    image = prepared(member="rootfs.ext4.zck-header", compressed=None, delta=delta, readback=False)
    scripts = {"b": {"base_check": {"member": "n3x-base-check-b.sh", "sha256": "12" * 32}}}
    text = swu.render_sw_description("2.1.0", ["lab:1"], [image], slots=("b",), scripts=scripts)
    assert 'type = "delta";' in text
    assert 'device = "/dev/disk/by-partlabel/rootfs_b";' in text
    assert 'source = "/dev/disk/by-partlabel/rootfs_a";' in text
    assert 'chain = "raw";' in text
    assert f'url = "{delta["url"]}";' in text
    assert f'{swu.DELTA_BASE_PROPERTY} = "{"ef" * 32}";' in text
    # the base check runs before anything is written; the chunks' own hashes replace a readback
    assert 'filename = "n3x-base-check-b.sh";\n\t\t\t\t\t\ttype = "preinstall";' in text
    assert "readback" not in text
    assert swu.delta_bases(text) == {"ef" * 32}


@pytest.mark.parametrize("attempts", [0, 10, True, "3"])
def test_boot_attempts_refused(attempts):
    with pytest.raises(swu.SwupdateError, match="boot_attempts"):
        swu.render_sw_description("1", ["lab:1"], [prepared()], boot_attempts=attempts)


@pytest.mark.parametrize(
    "paths",
    [["etc/hostname"], ["/etc/../root"], ["/etc/a b"], ["/proc/self"], ["/"], ["/etc/x;rm"], ["/run/x"], ["/etc/$(id)"], ["/etc/x\n"]],
)
def test_preserve_refuses_unsafe_paths(paths):
    with pytest.raises(swu.SwupdateError, match="preserve"):
        swu.check_preserve(paths)


@pytest.mark.parametrize("device", ["/dev/sda2", "/dev/x{slot}{slot}", "dev/{slot}", "/dev/$(x){slot}", "/dev/a b{slot}"])
def test_device_must_be_a_plain_path_with_slot_once(device):
    with pytest.raises(swu.SwupdateError, match="device"):
        swu.check_images([{"path": "/x/r.img", "device": device}])


def test_names_are_full_matched():
    with pytest.raises(swu.SwupdateError, match="plain file name"):
        swu.check_images([{"path": "/x/r.img", "name": "r.img\n"}])
    with pytest.raises(swu.SwupdateError, match="board"):
        swu.parse_hardware(["lab\n:1"])


def run_script(text, tmp_path, *args):
    script = tmp_path / "script.sh"
    script.write_text(text)
    script.chmod(0o755)
    return subprocess.run([str(script), *args], capture_output=True, text=True, check=False)


def test_base_check_script_refuses_another_base(tmp_path):
    grubenv = tmp_path / "grubenv"
    script = swu.base_check_script("b", "ab" * 32, grubenv=str(grubenv))
    assert script.startswith("#!/bin/sh\n")
    grubenv.write_text("# GRUB Environment Block\nrootfs_a_image=" + "ab" * 32 + "\nrootfs_b_image=" + "cd" * 32 + "\n")
    assert run_script(script, tmp_path).returncode == 0
    grubenv.write_text("# GRUB Environment Block\nrootfs_a_image=" + "cd" * 32 + "\n")
    refused = run_script(script, tmp_path)
    assert refused.returncode == 1
    assert "delta base mismatch" in refused.stderr
    grubenv.write_text("# GRUB Environment Block\n")
    assert "unrecorded" in run_script(script, tmp_path).stderr


def test_preserve_script_copies_identity_and_never_leaves_the_new_slot(tmp_path):
    source, target = tmp_path / "running", tmp_path / "new"
    (source / "etc/ssh").mkdir(parents=True)
    (source / "etc/systemd/network").mkdir(parents=True)
    (source / "etc/hostname").write_text("edge-1\n")
    (source / "etc/ssh/ssh_host_ed25519_key").write_text("KEY")
    (source / "etc/ssh/sshd_config").write_text("not preserved")
    (source / "etc/systemd/network/20-eth1.network").write_text("[Match]\nName=eth1\n")
    (target / "etc/systemd/network").mkdir(parents=True)
    (target / "etc/hostname").write_text("n3x-lab\n")
    (target / "etc/systemd/network/10-eth0.network").write_text("image's")
    script = swu.preserve_script("b", swu.DEFAULT_DEVICE, ["/etc/hostname", "/etc/ssh/ssh_host_*", "/etc/systemd/network", "/etc/missing"])
    result = run_script(script, tmp_path, str(source), str(target))
    assert result.returncode == 0, result.stderr
    assert (target / "etc/hostname").read_text() == "edge-1\n"
    assert (target / "etc/ssh/ssh_host_ed25519_key").read_text() == "KEY"
    assert not (target / "etc/ssh/sshd_config").exists()
    assert (target / "etc/systemd/network/20-eth1.network").exists()
    assert (target / "etc/systemd/network/10-eth0.network").read_text() == "image's"
    assert "mount -t ext4 /dev/disk/by-partlabel/rootfs_b" in script
    # A new slot whose /etc/systemd is a symlink out of it: refused, nothing written outside.
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(target / "etc/systemd")
    (target / "etc/systemd").symlink_to(outside)
    result = run_script(script, tmp_path, str(source), str(target))
    assert result.returncode == 1
    assert "leaves the new slot" in result.stderr
    assert list(outside.iterdir()) == []


def test_aes_key_file(tmp_path):
    path = tmp_path / "keys" / "aes.key"
    assert swu.generate_aes_key(str(path)) is True
    assert path.stat().st_mode & 0o777 == 0o600
    key, iv = swu.read_aes_key(str(path))
    assert (len(key), len(iv)) == (32, 16)
    assert swu.generate_aes_key(str(path)) is False
    assert swu.read_aes_key(str(path)) == (key, iv)
    path.chmod(0o644)
    with pytest.raises(swu.SwupdateError, match="must be 0600"):
        swu.read_aes_key(str(path))
    path.chmod(0o600)
    path.write_text("secret-not-hex 00\n")
    with pytest.raises(swu.SwupdateError) as caught:
        swu.read_aes_key(str(path))
    assert "secret-not-hex" not in str(caught.value)
    assert swu.image_ivt(key, SHA) == swu.image_ivt(key, SHA) != swu.image_ivt(key, "cd" * 32)


def test_encrypt_aes_cbc_is_what_openssl_decrypts(tmp_path):
    plain, enc = tmp_path / "plain", tmp_path / "enc"
    plain.write_bytes(os.urandom(100000) + b"tail")
    key, iv = os.urandom(32), os.urandom(16)
    swu.encrypt_aes_cbc(str(plain), str(enc), key, iv)
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    data = decryptor.update(enc.read_bytes()) + decryptor.finalize()
    assert unpadder.update(data) + unpadder.finalize() == plain.read_bytes()


@pytest.mark.skipif(ZSTD is None, reason="zstd is not installed (apt-get install zstd)")
def test_prepare_image_compresses_once_and_records_what_is_written(tmp_path):
    image = tmp_path / "rootfs.ext4"
    image.write_bytes(b"\0" * 1000000 + b"data" * 1000)
    work = tmp_path / "work"
    work.mkdir()
    first = swu.prepare_image({"name": "rootfs.ext4", "path": str(image), "device": swu.DEFAULT_DEVICE}, str(work))
    assert first["member"] == "rootfs.ext4.zst"
    assert first["compressed"] == "zstd"
    assert first["size"] < 20000
    assert first["written_size"] == image.stat().st_size
    assert first["written_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert first["sha256"] == hashlib.sha256(pathlib.Path(first["artifact"]).read_bytes()).hexdigest()
    assert subprocess.run(["zstd", "-dc", first["artifact"]], capture_output=True, check=True).stdout == image.read_bytes()
    mtime = os.stat(first["artifact"]).st_mtime_ns
    again = swu.prepare_image({"name": "rootfs.ext4", "path": str(image), "device": swu.DEFAULT_DEVICE}, str(work))
    assert again["artifact"] == first["artifact"]
    assert os.stat(again["artifact"]).st_mtime_ns == mtime
    assert not [p for p in work.iterdir() if p.name.startswith(".n3x-art-")]


@pytest.mark.skipif(ZCK is None, reason="zchunk is not installed (apt-get install zchunk)")
def test_prepare_delta_chunks_the_image_and_serves_it(tmp_path):
    base, image = tmp_path / "base.img", tmp_path / "new.img"
    base.write_bytes(os.urandom(300000))
    image.write_bytes(base.read_bytes()[:150000] + b"changed" + base.read_bytes()[150007:])
    work, served = tmp_path / "work", tmp_path / "served"
    work.mkdir()
    served.mkdir()
    entry = {"name": "rootfs.ext4", "path": str(image), "device": swu.DEFAULT_DEVICE, "delta_base": str(base)}
    result = swu.prepare_image(entry, str(work), delta_url="http://10.0.2.2:8080/ota/", delta_dir=str(served))
    delta = result["delta"]
    assert result["member"] == "rootfs.ext4.zck-header"
    assert delta["base_sha256"] == hashlib.sha256(base.read_bytes()).hexdigest()
    assert delta["url"] == f"http://10.0.2.2:8080/ota/{pathlib.Path(delta['zck']).name}"
    assert pathlib.Path(delta["zck"]).parent == served
    header = pathlib.Path(result["artifact"]).read_bytes()
    assert len(header) == delta["header_size"] < delta["zck_size"]
    assert pathlib.Path(delta["zck"]).read_bytes().startswith(header)
    assert header.startswith(b"\0ZCK1")
    for bad in ({"aes_key": str(tmp_path / "k")}, {"delta_url": None}, {"delta_url": "ftp://x/"}, {"delta_url": "http://x/ y"}):
        with pytest.raises(swu.SwupdateError):
            swu.prepare_image(entry, str(work), **({"delta_url": "http://x/", "delta_dir": str(served)} | bad))


def test_bundle_description_and_delta_base_check(tmp_path):
    rootfs = tmp_path / "r.img"
    rootfs.write_bytes(b"x" * 100)
    swu.build_bundle(str(tmp_path / "b.swu"), "2.0.0", ["lab:1"], [{"path": str(rootfs)}])
    text = swu.bundle_description(str(tmp_path / "b.swu"))
    assert text.startswith("software =")
    assert swu.bundle_version(text) == "2.0.0"
    assert swu.check_delta_base(text, {}, "a") is None
    delta = text.replace('type = "raw";', f'type = "delta";\n{swu.DELTA_BASE_PROPERTY} = "{"ab" * 32}";')
    assert swu.check_delta_base(delta, {"rootfs_a_image": "ab" * 32}, "a") == "ab" * 32
    with pytest.raises(swu.SwupdateError, match=r"delta base mismatch.*slot a holds cdcdcd"):
        swu.check_delta_base(delta, {"rootfs_a_image": "cd" * 32}, "a")
    with pytest.raises(swu.SwupdateError, match="unrecorded"):
        swu.check_delta_base(delta, {"rootfs_b_image": "ab" * 32}, "a")
    (tmp_path / "not.swu").write_bytes(b"PK\x03\x04" + b"\0" * 200)
    with pytest.raises(swu.SwupdateError, match="not a swupdate bundle"):
        swu.bundle_description(str(tmp_path / "not.swu"))


@pytest.mark.skipif(ZSTD is None, reason="zstd is not installed (apt-get install zstd)")
def test_full_bundle_members_and_scripts(keys, tmp_path):
    key, cert = keys
    rootfs = tmp_path / "rootfs.ext4"
    rootfs.write_bytes(b"\0" * 200000)
    result = swu.build_bundle(
        str(tmp_path / "u.swu"), "2.0.0", ["lab:1"], [{"path": str(rootfs)}], key=key, cert=cert,
        compression="zstd", preserve=swu.DEFAULT_PRESERVE, boot_attempts=2,
    )  # fmt: skip
    assert result["members"] == ["sw-description", "sw-description.sig", "rootfs.ext4.zst", "n3x-preserve-a.sh", "n3x-preserve-b.sh"]
    assert result["ratio"] < 0.25
    members = {m["name"]: m for m in swu.read_cpio((tmp_path / "u.swu").read_bytes())}
    description = members["sw-description"]["data"].decode()
    for slot in "ab":
        script = members[f"n3x-preserve-{slot}.sh"]["data"]
        assert f'filename = "n3x-preserve-{slot}.sh";' in description
        assert hashlib.sha256(script).hexdigest() in description
        assert f"/dev/disk/by-partlabel/rootfs_{slot} " in script.decode()
    assert swu.cms_verify(members["sw-description"]["data"], members["sw-description.sig"]["data"], cert)
    with pytest.raises(swu.SwupdateError, match="appears twice"):
        swu.build_bundle(
            str(tmp_path / "x.swu"), "1", ["lab:1"], [{"path": str(rootfs), "name": "n3x-preserve-a.sh"}], compression="none", preserve=["/etc/hostname"]
        )


def test_install_argv_passes_the_aes_key_path_only():
    argv = swu.install_argv("stable,slot_b", bundle="/data/u.swu", aes_key="/etc/swupdate/aes.key")
    assert argv[argv.index("-K") + 1] == "/etc/swupdate/aes.key"


def test_confirm_config(tmp_path):
    text = swu.confirm_config(30, ["eth1", "bond0.200"], "yes", "test -e /run/ok")
    assert text.splitlines()[1:] == ["timeout=30", "interfaces=eth1 bond0.200", "k3s=yes", "check=test -e /run/ok"]
    assert "interfaces=auto" in swu.confirm_config()
    for bad in ({"timeout": 0}, {"timeout": True}, {"interfaces": ["eth1;reboot"]}, {"interfaces": ["x" * 16]}, {"interfaces": "all"},
                {"interfaces": []}, {"k3s": "maybe"}, {"command": "a\nb"}):  # fmt: skip
        with pytest.raises(swu.SwupdateError, match="health_check"):
            swu.confirm_config(**bad)
    path = tmp_path / "etc" / "n3x" / "boot-confirm.conf"
    assert swu.write_confirm_config(text, str(path)) is True
    assert swu.write_confirm_config(text, str(path)) is False
    assert path.read_text() == text
    assert path.stat().st_mode & 0o777 == 0o644
