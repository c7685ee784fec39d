# Copyright: n3x developers
# MIT License
"""SWUpdate bundles (.swu) for A/B root filesystem updates, built without swupdate's tools.

A bundle is a cpio archive in the "newc with CRC" format (magic 070702, each header carrying
the 32-bit sum of the file's bytes) holding, in this order: sw-description (libconfig text),
sw-description.sig (a detached CMS signature of sw-description, DER) and the images. Every
image is listed in sw-description with its sha256, so the one signature covers everything.

The description carries one software collection, ``stable``, with a mode per slot
(``slot_a``, ``slot_b``): the device installs with ``swupdate -e stable,slot_<inactive>``,
so a single bundle serves a whole fleet whatever slot each node runs from. A bundle made for
one slot only carries just that mode. Everything sits under the board name of each
``board:revision`` entry, next to that board's ``hardware-compatibility`` list, so swupdate
refuses the bundle on another board and on another revision.

Nothing here imports Ansible: the swupdate_bundle module and the tests share it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_process import run_in_process_group

SLOTS = ("a", "b")
COLLECTION = "stable"
DEFAULT_DEVICE = "/dev/disk/by-partlabel/rootfs_{slot}"
SLOT_VARIABLE = "rootfs_slot"
CPIO_MAGIC = b"070702"
CPIO_TRAILER = "TRAILER!!!"
CPIO_MTIME = 0  # fixed, so the same inputs give the same bytes
_CHUNK = 1024 * 1024
# libconfig setting names: a letter or '*', then letters, digits, '-', '_', '*'.
_SETTING_NAME = re.compile(r"[A-Za-z][-A-Za-z0-9_]*")
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_RESERVED = {"version", "description", "hardware-compatibility", "uboot", "bootenv", "files", "scripts", "partitions", "images", COLLECTION}


class SwupdateError(Exception):
    pass


# --- slots ---------------------------------------------------------------------------


def inactive_slot(active):
    """The slot to update when the node runs from `active` ('a' or 'b')."""
    if active not in SLOTS:
        raise SwupdateError(f"active slot {active!r} is not one of {', '.join(SLOTS)}")
    return SLOTS[1 - SLOTS.index(active)]


def resolve_slots(slot, active_slot=None):
    """The slots a bundle carries: 'both' -> (a, b); 'a'/'b' -> that one; 'inactive' -> the other one."""
    if slot == "both":
        if active_slot is not None:
            raise SwupdateError("active_slot is only used with slot=inactive")
        return SLOTS
    if slot == "inactive":
        if active_slot is None:
            raise SwupdateError("slot=inactive needs active_slot")
        return (inactive_slot(active_slot),)
    if slot in SLOTS:
        if active_slot is not None:
            raise SwupdateError("active_slot is only used with slot=inactive")
        return (slot,)
    raise SwupdateError(f"slot {slot!r} is not one of a, b, inactive, both")


def selection(slot):
    """The argument of swupdate -e that installs to `slot`."""
    if slot not in SLOTS:
        raise SwupdateError(f"slot {slot!r} is not one of {', '.join(SLOTS)}")
    return f"{COLLECTION},slot_{slot}"


# --- inputs --------------------------------------------------------------------------


def parse_hardware(entries):
    """['board:rev', ...] -> {board: [rev, ...]} in first-seen order; the swupdate -H syntax."""
    if not entries:
        raise SwupdateError("hardware: at least one board:revision is required")
    boards = {}
    for entry in entries:
        board, sep, revision = str(entry).partition(":")
        if not sep or not board or not revision:
            raise SwupdateError(f"hardware: {entry!r} is not board:revision")
        if not _SETTING_NAME.fullmatch(board) or board in _RESERVED or board.startswith("slot_"):
            raise SwupdateError(
                f"hardware: board {board!r} must start with a letter and hold only letters, digits, '-' and '_' (and not be a swupdate keyword)"
            )
        if any(char in revision for char in '"\\\n') or revision != revision.strip():
            raise SwupdateError(f"hardware: revision {revision!r} holds a quote, backslash, newline or surrounding blanks")
        revisions = boards.setdefault(board, [])
        if revision not in revisions:
            revisions.append(revision)
    return boards


def _quote(value):
    text = str(value)
    if any(char in text for char in '"\\\n'):
        raise SwupdateError(f"{text!r}: quotes, backslashes and newlines are not allowed")
    return f'"{text}"'


def check_images(images):
    """Validate image dicts {name, path, device, sha256?}; returns them with defaults filled in."""
    if not images:
        raise SwupdateError("images: at least one image is required")
    checked, names = [], set()
    for index, image in enumerate(images):
        where = f"images[{index}]"
        name = image.get("name") or os.path.basename(str(image.get("path") or ""))
        if not name or not _FILENAME.fullmatch(name) or name.startswith("sw-description"):
            raise SwupdateError(f"{where}.name: {name!r} is not a plain file name (letters, digits, '.', '_', '+', '-')")
        if name in names:
            raise SwupdateError(f"{where}.name: {name!r} appears twice")
        names.add(name)
        device = image.get("device") or DEFAULT_DEVICE
        if "{slot}" not in device:
            raise SwupdateError(f"{where}.device: {device!r} must contain {{slot}}, which becomes a or b")
        _quote(device)
        checked.append({**image, "name": name, "device": device})
    return checked


# --- sw-description ------------------------------------------------------------------


def slot_bootenv(slot):
    """Bootloader variables an update to `slot` sets (GRUB grubenv with the lab image).

    rootfs_slot selects the root filesystem (root=LABEL=rootfs_<slot>); rootfs_fallback is
    the slot GRUB returns to when boot_count runs out with upgrade_available still 1. The
    node clears upgrade_available once it has booted the new slot and passed its checks.
    """
    return [
        (SLOT_VARIABLE, slot),
        ("rootfs_fallback", inactive_slot(slot)),
        ("upgrade_available", "1"),
        ("boot_count", "0"),
    ]


def render_sw_description(version, hardware, images, slots=SLOTS, description=None):
    """sw-description text (libconfig). images need name, device (with {slot}) and sha256."""
    if not str(version).strip():
        raise SwupdateError("version must not be empty")
    boards = parse_hardware(hardware)
    images = check_images(images)
    for image in images:
        if not re.fullmatch(r"[0-9a-f]{64}", str(image.get("sha256", ""))):
            raise SwupdateError(f"images: {image['name']}: sha256 must be 64 lowercase hex digits")
    lines = ["software =", "{", f"\tversion = {_quote(version)};"]
    if description:
        lines.append(f"\tdescription = {_quote(description)};")
    for board, revisions in boards.items():
        lines += [
            "",
            f"\t{board} = {{",
            f"\t\thardware-compatibility = [ {', '.join(_quote(rev) for rev in revisions)} ];",
            f"\t\t{COLLECTION} = {{",
        ]
        for slot in slots:
            lines.append(f"\t\t\tslot_{slot} = {{")
            lines.append("\t\t\t\timages: (")
            entries = []
            for image in images:
                entries.append(
                    "\n".join(
                        [
                            "\t\t\t\t\t{",
                            f"\t\t\t\t\t\tfilename = {_quote(image['name'])};",
                            f"\t\t\t\t\t\tdevice = {_quote(image['device'].format(slot=slot))};",
                            '\t\t\t\t\t\ttype = "raw";',
                            f"\t\t\t\t\t\tsha256 = {_quote(image['sha256'])};",
                            "\t\t\t\t\t}",
                        ]
                    )
                )
            lines.append(",\n".join(entries))
            lines.append("\t\t\t\t);")
            lines.append("\t\t\t\tbootenv: (")
            lines.append(",\n".join(f"\t\t\t\t\t{{ name = {_quote(name)}; value = {_quote(value)}; }}" for name, value in slot_bootenv(slot)))
            lines.append("\t\t\t\t);")
            lines.append("\t\t\t};")
        lines += ["\t\t};", "\t};"]
    lines.append("};")
    return "\n".join(lines) + "\n"


# --- cpio, newc with CRC -------------------------------------------------------------


def member_span(data, name):
    """(header offset, data offset, size) of member `name` in a newc-crc archive (a .swu).

    For inspecting bundles; raises KeyError when the archive has no such member.
    """
    offset = 0
    while True:
        namesize, size = int(data[offset + 94 : offset + 102], 16), int(data[offset + 54 : offset + 62], 16)
        member = data[offset + 110 : offset + 110 + namesize - 1].decode()
        start = offset + 110 + namesize
        start += -start % 4
        if member == name:
            return offset, start, size
        if member == CPIO_TRAILER:
            raise KeyError(name)
        offset = start + size + (-(start + size) % 4)


def _cpio_header(ino, name, size, checksum, mode=0o100644, nlink=1):
    encoded = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, nlink, CPIO_MTIME, size, 0, 0, 0, 0, len(encoded), checksum]
    header = CPIO_MAGIC + b"".join(b"%08X" % field for field in fields) + encoded
    return header + b"\0" * (-len(header) % 4)


def file_digests(path):
    """(sha256 hex, cpio checksum, size) of a file, read once in chunks."""
    digest, checksum, size = hashlib.sha256(), 0, 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            checksum = (checksum + sum(chunk)) & 0xFFFFFFFF
            size += len(chunk)
    return digest.hexdigest(), checksum, size


def write_cpio(out, members):
    """Write members [(name, bytes | {'path': ...})] to the binary stream `out`, then the trailer.

    Inode numbers count from 1 and mtime, uid and gid are 0, so equal input gives equal bytes.
    """
    for ino, (name, content) in enumerate(members, start=1):
        if isinstance(content, bytes | bytearray):
            out.write(_cpio_header(ino, name, len(content), sum(content) & 0xFFFFFFFF))
            out.write(content)
            size = len(content)
        else:
            _sha256, checksum, size = file_digests(content["path"])
            out.write(_cpio_header(ino, name, size, checksum))
            with open(content["path"], "rb") as handle:
                shutil.copyfileobj(handle, out, _CHUNK)
        out.write(b"\0" * (-size % 4))
    out.write(_cpio_header(0, CPIO_TRAILER, 0, 0, mode=0, nlink=1))


def read_cpio(data):
    """Parse newc-with-CRC bytes -> [{'name', 'mode', 'size', 'checksum', 'data', 'mtime', 'ino'}] (trailer excluded).

    Raises SwupdateError on a wrong magic, a truncated archive or a checksum mismatch.
    """
    members, offset = [], 0
    while True:
        if data[offset : offset + 6] != CPIO_MAGIC:
            raise SwupdateError(f"cpio: bad magic {data[offset : offset + 6]!r} at offset {offset}")
        try:
            fields = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        except ValueError as exc:
            raise SwupdateError(f"cpio: bad header at offset {offset}") from exc
        ino, mode, _uid, _gid, _nlink, mtime, size, _devmajor, _devminor, _rdevmajor, _rdevminor, namesize, checksum = fields
        name_start = offset + 110
        name = data[name_start : name_start + namesize - 1].decode()
        data_start = name_start + namesize
        data_start += -data_start % 4
        if name == CPIO_TRAILER:
            return members
        content = bytes(data[data_start : data_start + size])
        if len(content) != size:
            raise SwupdateError(f"cpio: {name}: truncated")
        if sum(content) & 0xFFFFFFFF != checksum:
            raise SwupdateError(f"cpio: {name}: checksum mismatch")
        members.append({"name": name, "mode": mode, "size": size, "checksum": checksum, "data": content, "mtime": mtime, "ino": ino})
        offset = data_start + size
        offset += -offset % 4


# --- signing -------------------------------------------------------------------------


def check_private_key(path):
    """The signing key must exist and be readable by its owner only (0600 or stricter)."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError as exc:
        raise SwupdateError(f"signing key {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise SwupdateError(f"signing key {path}: mode {mode:04o} lets others read it; it must be 0600")


def _openssl(args, what):
    try:
        result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise SwupdateError("openssl is not installed") from exc
    if result.returncode != 0:
        # openssl never prints key material on errors; keep the first lines only.
        detail = " ".join(result.stderr.strip().splitlines()[:3])
        raise SwupdateError(f"{what} failed: {detail}")
    return result


def cms_sign(content, key, cert):
    """Detached CMS signature (DER) of `content` bytes, as swupdate's CMS mode verifies it.

    -noattr leaves out the signing time, so an RSA key gives the same signature for the same
    content and the bundle stays byte-for-byte reproducible.
    """
    check_private_key(key)
    with tempfile.TemporaryDirectory(prefix="n3x-swu-") as work:
        source, signature = os.path.join(work, "sw-description"), os.path.join(work, "sw-description.sig")
        with open(source, "wb") as handle:
            handle.write(content)
        _openssl(
            ["cms", "-sign", "-in", source, "-out", signature, "-signer", cert, "-inkey", key, "-outform", "DER", "-nosmimecap", "-noattr", "-binary"],
            "signing sw-description",
        )
        with open(signature, "rb") as handle:
            return handle.read()


def cms_verify(content, signature, cert):
    """True when `signature` (DER) is a valid signature of `content` by `cert` (trusted as is)."""
    with tempfile.TemporaryDirectory(prefix="n3x-swu-") as work:
        source, sig = os.path.join(work, "content"), os.path.join(work, "sig")
        with open(source, "wb") as handle:
            handle.write(content)
        with open(sig, "wb") as handle:
            handle.write(signature)
        try:
            _openssl(
                ["cms", "-verify", "-binary", "-inform", "DER", "-in", sig, "-content", source, "-CAfile", cert, "-purpose", "any", "-out", os.devnull],
                "verifying",
            )
        except SwupdateError:
            return False
        return True


def generate_signing_key(key, cert, common_name="n3x lab swupdate signing", days=3650, bits=3072):
    """Create an RSA key (mode 0600, made under umask 077) and a self-signed certificate for it.

    The certificate carries the emailProtection extended key usage that swupdate checks by
    default (--cert-purpose). Returns False and leaves both alone when both already exist.
    """
    if os.path.exists(key) and os.path.exists(cert):
        check_private_key(key)
        return False
    if os.path.exists(key) != os.path.exists(cert):
        raise SwupdateError(f"only one of {key} and {cert} exists; remove it or provide both")
    for directory in sorted({os.path.dirname(os.path.abspath(key)), os.path.dirname(os.path.abspath(cert))}):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    if any(char in common_name for char in "/=\n"):
        raise SwupdateError(f"common name {common_name!r} must not contain '/', '=' or newlines")
    previous = os.umask(0o077)
    try:
        _openssl(
            [
                "req", "-x509", "-newkey", f"rsa:{int(bits)}", "-nodes", "-keyout", key, "-out", cert, "-days", str(int(days)),
                "-subj", f"/CN={common_name}",
                "-addext", "keyUsage=critical,digitalSignature",
                "-addext", "extendedKeyUsage=emailProtection",
            ],
            "generating the signing key",
        )  # fmt: skip
    finally:
        os.umask(previous)
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)
    return True


# --- installing ----------------------------------------------------------------------


def install_outcome(output, returncode):
    """'successful', 'failed' or 'interrupted' for one `swupdate -i` run (its log and exit code).

    swupdate 2022.12 (Debian bookworm) has a start-up race in `-i`: the client half streams
    the bundle, then asks for the installer's status; when the installer thread has not yet
    left IDLE (small bundles fit in the socket buffer), the client reads IDLE, logs "SWUpdate
    was successful !", exits 1 and tears down the install it started (core/install_from_file.c
    endupdate() with status IDLE, ipc_wait_for_complete() in ipc/network_ipc.c). That run
    proves nothing either way, so it is 'interrupted' and is worth running again. A real
    success exits 0 with a success line and no [ERROR]; anything else is 'failed'.

    `swupdate -d` (the downloader) has no client half: only the installer reports, with
    "SWUPDATE successful !" (or "SWUPDATE failed ..."), so that line counts as success too.
    """
    succeeded_line = "SWUpdate was successful" in output
    installer_succeeded = "SWUPDATE successful" in output
    if returncode == 0 and (succeeded_line or installer_succeeded) and "[ERROR]" not in output:
        return "successful"
    if returncode != 0 and succeeded_line and "SWUpdate *failed*" not in output:
        return "interrupted"
    return "failed"


def run_install(argv, attempts=5, timeout=900, env=None):
    """Run `swupdate ... -i BUNDLE` until it is not interrupted by the start-up race.

    Returns (outcome, log of the last run, number of runs). Every run is a complete, real
    install: the image and bootloader variables are written again from the start.

    swupdate's own exit is what is waited for, not the end of its output: a helper it forked
    can keep the output open after swupdate has exited (seen as a 180 s hang after
    "SWUpdate *failed*" with swupdate's exit code already 1). Each run has its own process
    group, stopped once swupdate exits or ``timeout`` seconds pass (then the run 'failed').
    """
    runs = 0
    while True:
        runs += 1
        with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as log:
            returncode, timed_out = run_in_process_group(argv, None, log, timeout, grace=10, env=env)
            log.seek(0)
            output = log.read()
        if timed_out:
            return "failed", output + f"[ERROR] : swupdate did not finish within {timeout} s; its process group was stopped\n", runs
        outcome = install_outcome(output, returncode)
        if outcome != "interrupted" or runs >= attempts:
            return outcome, output, runs


# --- on the device -------------------------------------------------------------------

# swupdate keeps its sockets and its copy of each image in TMPDIR until the image is
# verified; the A/B lab image's data partition has room for it (the root has not).
DEFAULT_TMPDIR = "/data/swupdate"
DEFAULT_PUBLIC_KEY = "/etc/swupdate/swupdate.crt"
_PARTLABEL_ROOT = re.compile(r"(?:^|\s)root=PARTLABEL=rootfs_([a-z])(?:\s|$)")


def running_slot(cmdline):
    """The slot the running system booted from, from /proc/cmdline (root=PARTLABEL=rootfs_<slot>)."""
    match = _PARTLABEL_ROOT.search(cmdline)
    if not match or match.group(1) not in SLOTS:
        raise SwupdateError(f"cannot tell the running slot: no root=PARTLABEL=rootfs_a|b in the kernel command line {cmdline.strip()!r}")
    return match.group(1)


def parse_grubenv(text):
    """{name: value} of a grubenv file or of `grub-editenv FILE list` output."""
    variables = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            variables[name] = value
    return variables


def install_argv(
    selection_arg,
    public_key=DEFAULT_PUBLIC_KEY,
    bundle=None,
    url=None,
    bootloader="grub",
    hardware=None,
    check=False,
    swupdate="swupdate",
):
    """The swupdate command line that installs a bundle file (-i) or URL (-d "-u URL")."""
    if (bundle is None) == (url is None):
        raise SwupdateError("give exactly one of bundle and url")
    if check and url is not None:
        raise SwupdateError("swupdate checks (-c) only a bundle file, not a URL")
    argv = [swupdate, "-v", "-k", public_key, "-e", selection_arg]
    if bootloader:
        argv[1:1] = ["-B", bootloader]
    if hardware:
        parse_hardware([hardware])
        argv += ["-H", hardware]
    if check:
        argv.append("-c")
    if bundle is not None:
        argv += ["-i", bundle]
    else:
        if any(char.isspace() or char in "\"'" for char in url):
            raise SwupdateError(f"url {url!r} holds blanks or quotes")
        argv += ["-d", f"-u {url}"]
    return argv


# --- bundle --------------------------------------------------------------------------


def bundle_members(version, hardware, images, slots, key=None, cert=None, description=None):
    """(sw-description text, cpio members) for a bundle; unsigned when key and cert are None."""
    images = check_images(images)
    described = []
    for image in images:
        sha256, _checksum, _size = file_digests(image["path"])
        described.append({**image, "sha256": sha256})
    text = render_sw_description(version, hardware, described, slots, description)
    members = [("sw-description", text.encode())]
    if key is not None or cert is not None:
        if not (key and cert):
            raise SwupdateError("signing needs both signing_key and signing_cert")
        members.append(("sw-description.sig", cms_sign(text.encode(), key, cert)))
    members += [(image["name"], {"path": image["path"]}) for image in images]
    return text, members


def _same_file(left, right):
    if not os.path.isfile(right) or os.path.getsize(left) != os.path.getsize(right):
        return False
    with open(left, "rb") as one, open(right, "rb") as two:
        while True:
            first, second = one.read(_CHUNK), two.read(_CHUNK)
            if first != second:
                return False
            if not first:
                return True


def build_bundle(dest, version, hardware, images, slot="both", active_slot=None, key=None, cert=None, description=None, check_mode=False, mode=0o644):
    """Write the bundle to `dest` atomically when its bytes differ. Returns a result dict."""
    slots = resolve_slots(slot, active_slot)
    text, members = bundle_members(version, hardware, images, slots, key, cert, description)
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        raise SwupdateError(f"dest: directory {directory} does not exist")
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".n3x-swu-")
    try:
        with os.fdopen(handle, "wb") as out:
            write_cpio(out, members)
        changed = not _same_file(temporary, dest)
        if changed and not check_mode:
            os.chmod(temporary, mode)
            os.replace(temporary, dest)
        elif not changed and os.stat(dest).st_mode & 0o7777 != mode:
            changed = True
            if not check_mode:
                os.chmod(dest, mode)
        sha256, _checksum, size = file_digests(temporary if check_mode or not changed else dest)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return {
        "changed": changed,
        "sw_description": text,
        "slots": list(slots),
        "selections": {slot_name: selection(slot_name) for slot_name in slots},
        "signed": key is not None,
        "members": [name for name, _data in members],
        "sha256": sha256,
        "size": size,
    }
