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

import contextlib
import hashlib
import hmac
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_process import run_in_process_group, runnable_threads, stop_group

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
# A device path with one {slot}: it also goes into the bundle's shell scripts, so no
# character a shell would read specially.
_DEVICE = re.compile(r"/[A-Za-z0-9._/+@:-]*\{slot\}[A-Za-z0-9._/+@:-]*")
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
        if not _DEVICE.fullmatch(device) or device.count("{slot}") != 1:
            raise SwupdateError(f"{where}.device: {device!r} must be an absolute path of letters, digits and ._/+@:- with {{slot}} once")
        checked.append({**image, "name": name, "device": device})
    return checked


# --- sw-description ------------------------------------------------------------------

# GRUB environment variables the bundle sets besides the slot choice: which image and
# version each slot holds (the delta base check and the rollout report read them) and how
# many unconfirmed boots GRUB allows before it goes back to the other slot.
IMAGE_VARIABLE = "rootfs_{slot}_image"
VERSION_VARIABLE = "rootfs_{slot}_version"
ATTEMPTS_VARIABLE = "boot_attempts"
DEFAULT_BOOT_ATTEMPTS = 3
# The lab image's GRUB counts boots with a chain of string compares (no arithmetic in GRUB
# script), up to this many.
MAX_BOOT_ATTEMPTS = 9
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+~-]{0,63}")


def check_version(version):
    """A version goes into sw-description and the GRUB environment: a short plain token."""
    text = str(version)
    if not _VERSION.fullmatch(text):
        raise SwupdateError(f"version {text!r} must be 1-64 letters, digits, '.', '_', '+', '~' or '-', starting with a letter or digit")
    return text


def check_boot_attempts(attempts):
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= MAX_BOOT_ATTEMPTS:
        raise SwupdateError(f"boot_attempts {attempts!r} must be a whole number from 1 to {MAX_BOOT_ATTEMPTS}")
    return attempts


def slot_bootenv(slot, image_sha256=None, version=None, boot_attempts=None):
    """Bootloader variables an update to `slot` sets (GRUB grubenv with the lab image).

    rootfs_slot selects the root filesystem (root=PARTLABEL=rootfs_<slot>); rootfs_fallback is
    the slot GRUB returns to when boot_count reaches boot_attempts with upgrade_available still
    1. The node clears upgrade_available once it has booted the new slot and passed its health
    check. rootfs_<slot>_image (sha256 of the image written) and rootfs_<slot>_version record
    what the slot holds: a delta names the image it was made against, and the rollout report
    shows the version.
    """
    variables = [
        (SLOT_VARIABLE, slot),
        ("rootfs_fallback", inactive_slot(slot)),
        ("upgrade_available", "1"),
        ("boot_count", "0"),
    ]
    if boot_attempts is not None:
        variables.append((ATTEMPTS_VARIABLE, str(check_boot_attempts(boot_attempts))))
    if image_sha256 is not None:
        variables.append((IMAGE_VARIABLE.format(slot=slot), _check_sha256(image_sha256, "image sha256")))
    if version is not None:
        variables.append((VERSION_VARIABLE.format(slot=slot), check_version(version)))
    return variables


def _check_sha256(value, what):
    if not re.fullmatch(r"[0-9a-f]{64}", str(value)):
        raise SwupdateError(f"{what}: {value!r} is not 64 lowercase hex digits")
    return value


def _setting(name, value):
    if isinstance(value, bool):
        return f"{name} = {'true' if value else 'false'};"
    return f"{name} = {_quote(value)};"


def _block(settings, properties=None, indent="\t\t\t\t\t"):
    """One libconfig group ({ ... }) of an images or scripts list."""
    lines = [indent + "{"]
    lines += [indent + "\t" + _setting(name, value) for name, value in settings]
    if properties:
        lines.append(indent + "\tproperties: {")
        lines += [indent + "\t\t" + _setting(name, value) for name, value in properties]
        lines.append(indent + "\t};")
    lines.append(indent + "}")
    return "\n".join(lines)


def image_entry(image, slot):
    """The images entry that writes `image` (a prepared image, see prepare_image) to `slot`."""
    device = image["device"].format(slot=slot)
    delta = image.get("delta")
    settings = [("filename", image.get("member", image["name"])), ("device", device), ("type", "delta" if delta else "raw")]
    if image.get("compressed"):
        settings.append(("compressed", image["compressed"]))
    if image.get("encrypted"):
        settings += [("encrypted", True), ("ivt", image["ivt"])]
    settings.append(("sha256", image["sha256"]))
    properties = None
    if delta:
        # handlers/delta_handler.c: the chunks the source lacks come from url (HTTP range
        # requests); source is the slot the node runs, the other one; raw writes the result.
        properties = [
            ("url", delta["url"]),
            ("source", image["device"].format(slot=inactive_slot(slot))),
            ("chain", "raw"),
            ("zckloglevel", "error"),
            (DELTA_BASE_PROPERTY, delta["base_sha256"]),
        ]
    return _block(settings, properties)


def script_entries(image, slot, scripts):
    """The scripts entries of one slot: delta base check, readback, preserve (in that order).

    `scripts` maps a script's role to its prepared member ({member, sha256}) for this slot.
    """
    entries = []
    if "base_check" in scripts:
        entries.append(_block([("filename", scripts["base_check"]["member"]), ("type", "preinstall"), ("sha256", scripts["base_check"]["sha256"])]))
    if image.get("written_sha256") and image.get("readback", True):
        # handlers/readback_handler.c (postinstall): sha256 of what is now on the partition.
        entries.append(
            _block(
                [("device", image["device"].format(slot=slot)), ("type", "readback")],
                [("sha256", image["written_sha256"]), ("size", str(image["written_size"])), ("offset", "0")],
            )
        )
    if "preserve" in scripts:
        entries.append(_block([("filename", scripts["preserve"]["member"]), ("type", "postinstall"), ("sha256", scripts["preserve"]["sha256"])]))
    return entries


def render_sw_description(version, hardware, images, slots=SLOTS, description=None, scripts=None, boot_attempts=None):
    """sw-description text (libconfig).

    images are prepared images (prepare_image), or plain {name, device (with {slot}),
    sha256} dicts for an uncompressed raw image. scripts: {slot: {role: {member, sha256}}}
    (see bundle_scripts). The first image is the root filesystem whose sha256 and version
    the bootloader variables record.
    """
    if not str(version).strip():
        raise SwupdateError("version must not be empty")
    version = check_version(version)
    boards = parse_hardware(hardware)
    images = check_images(images)
    for image in images:
        _check_sha256(image.get("sha256", ""), f"images: {image['name']}: sha256")
    scripts = scripts or {}
    root = images[0]
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
            lines.append(",\n".join(image_entry(image, slot) for image in images))
            lines.append("\t\t\t\t);")
            entries = [entry for image in images for entry in script_entries(image, slot, scripts.get(slot, {}) if image is root else {})]
            if entries:
                lines.append("\t\t\t\tscripts: (")
                lines.append(",\n".join(entries))
                lines.append("\t\t\t\t);")
            bootenv = slot_bootenv(
                slot,
                root.get("written_sha256"),
                version if root.get("written_sha256") else None,
                boot_attempts,
            )
            lines.append("\t\t\t\tbootenv: (")
            lines.append(",\n".join(f"\t\t\t\t\t{{ name = {_quote(name)}; value = {_quote(value)}; }}" for name, value in bootenv))
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


def check_private_key(path, what="signing key"):
    """A private key must exist and be readable by its owner only (0600 or stricter)."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError as exc:
        raise SwupdateError(f"{what} {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise SwupdateError(f"{what} {path}: mode {mode:04o} lets others read it; it must be 0600")


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


# Lines of swupdate 2022.12's installer thread (network_initializer, core/stream_interface.c;
# TRACE lines need -v): its last line before it waits for requests, and its last line of
# every install.
INSTALLER_STARTING = "Main loop daemon"
INSTALLER_IDLE_AGAIN = "Main thread sleep again"


def install_via_daemon(daemon_argv, bundle, dry_run=False, client="swupdate-client", env=None, timeout=900):
    """Install `bundle` through a swupdate daemon and its client, waiting on the installer itself.

    `swupdate -i` in 2022.12 races twice (core/install_from_file.c, ipc/network_ipc.c,
    core/stream_interface.c, core/network_thread.c):
    - the client half asks for the installer's status once the bundle is in the socket and
      stops at the first IDLE answer; a small bundle fits in the socket buffer, so under load
      the client reads IDLE before the installer thread has woken, logs "SWUpdate was
      successful !", exits 1 and tears down the install it started;
    - the installer thread announces itself ready (thread_ready()) before it waits on its
      condition variable, and the network thread signals that variable without a predicate:
      a request that comes in between is lost.
    So the daemon runs on its own (`daemon_argv`: swupdate with -v and no -i), the bundle goes
    in only once its installer thread has logged INSTALLER_STARTING and no thread of the daemon
    is runnable (the only place left to sleep is that wait), and the outcome is read from the
    installer's own log, once it has logged INSTALLER_IDLE_AGAIN; the client's exit status,
    which the first race makes meaningless, is not used, and the client is stopped then
    (tools/swupdate-client.c can miss its own end signal and wait for ever). Returns (outcome, log): outcome is
    'successful' (the installer logged "SWUPDATE successful" and no [ERROR]) or 'failed'.
    """
    lines, seen = [], threading.Condition()

    def read(stream, prefix=""):
        for line in stream:
            with seen:
                lines.append(prefix + line.rstrip("\n"))
                seen.notify_all()

    def wait_for(predicate, until):
        with seen:
            while not predicate():
                left = until - time.monotonic()
                if left <= 0:
                    return False
                seen.wait(min(left, 0.05))
            return True

    deadline = time.monotonic() + timeout
    # Its own process group: the helpers swupdate forks (the chunks downloader) hold the output
    # too, and go with it.
    daemon = subprocess.Popen(daemon_argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env, start_new_session=True)
    readers = [threading.Thread(target=read, args=(daemon.stdout,), daemon=True)]
    readers[0].start()
    client_process = None
    try:
        started = wait_for(lambda: daemon.poll() is not None or any(INSTALLER_STARTING in line for line in lines), deadline)
        if not started or daemon.poll() is not None:
            return "failed", "\n".join([*lines, f"n3x: swupdate's installer did not start ({'exited' if started else 'timed out'})"])
        if not wait_for(lambda: daemon.poll() is not None or runnable_threads(daemon.pid) == 0, deadline):
            return "failed", "\n".join([*lines, "n3x: swupdate's threads never settled"])
        argv = [client, *(["-d"] if dry_run else []), bundle]
        client_process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env)
        readers.append(threading.Thread(target=read, args=(client_process.stdout, "client: "), daemon=True))
        readers[1].start()

        def settled():
            # The daemon's own line: the client relays the same message sooner, and the
            # installer's verdict may then not be in the daemon's output yet.
            if daemon.poll() is not None or any(INSTALLER_IDLE_AGAIN in line for line in lines if not line.startswith("client: ")):
                return True
            # The request was refused before the installer woke (swupdate-client's message).
            return client_process.poll() is not None and any("swupdate_async_start returns" in line for line in lines)

        if not wait_for(settled, deadline):
            return "failed", "\n".join([*lines, f"n3x: no end of install within {timeout} s"])
        with seen:
            log = "\n".join(lines)
            installer_log = "\n".join(line for line in lines if not line.startswith("client: "))
        ended = INSTALLER_IDLE_AGAIN in installer_log
        if ended and "SWUPDATE successful" in installer_log and "[ERROR]" not in installer_log:
            return "successful", log
        return "failed", log
    finally:
        if client_process is not None and client_process.poll() is None:
            client_process.kill()
            client_process.wait()
        stop_group(daemon, grace=10)
        for reader in readers:
            reader.join(timeout=10)


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
    aes_key=None,
):
    """The swupdate command line that installs a bundle file (-i) or URL (-d "-u URL").

    aes_key is the path of the -K key file that decrypts encrypted images (never the key).
    """
    if (bundle is None) == (url is None):
        raise SwupdateError("give exactly one of bundle and url")
    if check and url is not None:
        raise SwupdateError("swupdate checks (-c) only a bundle file, not a URL")
    argv = [swupdate, "-v", "-k", public_key, "-e", selection_arg]
    if bootloader:
        argv[1:1] = ["-B", bootloader]
    if aes_key:
        argv += ["-K", aes_key]
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


# --- image artifacts: compressed, encrypted, delta -----------------------------------

COMPRESSIONS = ("zstd", "none")
# zstd level of compressed images. Measured on the lab's 568 MiB A/B slot (2 cores, with
# other VMs running): level 3 gives 129.6 MiB in 10 s, level 9 113.1 MiB in 17 s, level 15
# 111.8 MiB in 156 s. Level 9 is the knee; artifacts are kept by content (work_dir), so an
# image is compressed once.
DEFAULT_COMPRESSION_LEVEL = 9
# The delta image entry names the image it was made against (a property swupdate's delta
# handler ignores); swupdate_install and the bundle's preinstall script compare it with the
# image the source slot holds.
DELTA_BASE_PROPERTY = "n3x-base-sha256"
# What makes a node itself and survives an update to the other slot (the bundle's
# postinstall script copies these from the running system into the slot it wrote): name,
# machine id, SSH host keys, its network units (written from the profile), k3s config and
# token, n3x's kernel settings and boot-confirmation config, the iSCSI initiator name and
# the AES key its updates are decrypted with. Software itself comes from the image.
DEFAULT_PRESERVE = [
    "/etc/hostname",
    "/etc/hosts",
    "/etc/machine-id",
    "/etc/ssh/ssh_host_*",
    "/etc/systemd/network",
    "/etc/rancher",
    "/etc/n3x",
    "/etc/modules-load.d/n3x-*.conf",
    "/etc/sysctl.d/90-n3x-*.conf",
    "/etc/iscsi/initiatorname.iscsi",
    "/etc/swupdate/aes.key",
]
_PRESERVE = re.compile(r"(/[A-Za-z0-9._@+*-]+)+")
_AES_KEY = re.compile(r"([0-9a-fA-F]{32}|[0-9a-fA-F]{48}|[0-9a-fA-F]{64})\s+([0-9a-fA-F]{32})\s*")


def _tool(argv, what):
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        package = {"zstd": "zstd", "zck": "zchunk", "zck_read_header": "zchunk"}.get(argv[0], argv[0])
        raise SwupdateError(f"{what} needs {argv[0]} (Debian package {package})") from exc
    if result.returncode != 0:
        raise SwupdateError(f"{what} failed: {' '.join(result.stderr.strip().splitlines()[:3])}")
    return result.stdout


def _artifact(work_dir, name, make):
    """work_dir/name, made by make(temporary path) unless it exists (artifacts are named by content)."""
    path = os.path.join(work_dir, name)
    if not os.path.isfile(path):
        handle, temporary = tempfile.mkstemp(dir=work_dir, prefix=".n3x-art-")
        os.close(handle)
        try:
            make(temporary)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    return path


def compress_zstd(source, dest, level=DEFAULT_COMPRESSION_LEVEL):
    """zstd-compress source into dest (the format swupdate's `compressed = "zstd"` reads)."""
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 19:
        raise SwupdateError(f"compression_level {level!r} must be 1 to 19")
    _tool(["zstd", "-q", "-f", f"-{level}", "-T0", "--no-progress", "-o", dest, source], f"compressing {source}")


def read_aes_key(path):
    """(key, iv) bytes from swupdate's -K file: '<key hex> <iv hex>', mode 0600 (core/util.c load_decryption_key)."""
    check_private_key(path, "AES key")
    with open(path, encoding="ascii", errors="replace") as handle:
        text = handle.read(512)
    match = _AES_KEY.fullmatch(text)
    if not match:
        # Never echo the content: it is the key.
        raise SwupdateError(f"AES key {path}: not '<key: 32, 48 or 64 hex digits> <iv: 32 hex digits>' on one line")
    return bytes.fromhex(match.group(1)), bytes.fromhex(match.group(2))


def generate_aes_key(path):
    """Write a new AES-256 key file for swupdate -K (mode 0600, never overwriting). Returns True when written."""
    if os.path.lexists(path):
        read_aes_key(path)
        return False
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{os.urandom(32).hex()} {os.urandom(16).hex()}\n")
    return True


def image_ivt(key, artifact_sha256):
    """The IV of one encrypted image: derived from the key and the plain artifact, so the same
    inputs give the same bundle (swupdate reads it from the image's `ivt`)."""
    return hmac.new(key, b"n3x ivt " + artifact_sha256.encode(), hashlib.sha256).digest()[:16]


def encrypt_aes_cbc(source, dest, key, iv):
    """AES-CBC with PKCS#7 padding, as swupdate decrypts `encrypted = true` images
    (corelib/swupdate_decrypt.c: EVP aes-{128,192,256}-cbc)."""
    try:
        from cryptography.hazmat.primitives import padding
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError as exc:
        raise SwupdateError("encrypting images needs the Python package cryptography where the bundle is built") from exc
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    padder = padding.PKCS7(128).padder()
    with open(source, "rb") as src, open(dest, "wb") as out:
        while chunk := src.read(_CHUNK):
            out.write(encryptor.update(padder.update(chunk)))
        out.write(encryptor.update(padder.finalize()) + encryptor.finalize())


def zchunk(source, dest):
    """source as a zchunk file (dest) and its header (dest + '.header'), as swupdate's delta
    handler wants them (doc/source/handlers.rst, Delta Update Handler): `zck -u -h sha256`,
    and the header cut at zck_read_header's "Header size"."""
    _tool(["zck", "-u", "-h", "sha256", "-o", dest, source], f"chunking {source}")
    report = _tool(["zck_read_header", "-v", dest], f"reading the zchunk header of {dest}")
    match = re.search(r"^Header size: *([0-9]+)$", report, re.MULTILINE)
    if not match:
        raise SwupdateError(f"zck_read_header printed no header size for {dest}")
    chunks = re.search(r"^Chunk count: *([0-9]+)$", report, re.MULTILINE)
    size = int(match.group(1))
    with open(dest, "rb") as zck, open(dest + ".header", "wb") as header:
        header.write(zck.read(size))
    return {"header_size": size, "chunks": int(chunks.group(1)) if chunks else None}


def zchunk_chunks(path):
    """The number of chunks of a zchunk file (zck_read_header)."""
    match = re.search(r"^Chunk count: *([0-9]+)$", _tool(["zck_read_header", path], f"reading the zchunk header of {path}"), re.MULTILINE)
    return int(match.group(1)) if match else None


def _work_dir_or_temporary(work_dir, stack):
    if work_dir:
        os.makedirs(work_dir, mode=0o700, exist_ok=True)
        return work_dir
    return stack.enter_context(tempfile.TemporaryDirectory(prefix="n3x-swu-work-"))


def prepare_image(image, work_dir, compression="zstd", level=DEFAULT_COMPRESSION_LEVEL, aes_key=None, delta_url=None, delta_dir=None):
    """The artifact an image travels as, made (or reused) in work_dir. Returns the image dict with

    member (name in the bundle), artifact (its path), sha256 (of the artifact: what swupdate
    checks as it reads the bundle), written_sha256 and written_size (of the image itself: what
    lands on the slot, checked by the readback script), compressed, encrypted, ivt and, for a
    delta (image['delta_base'] set), delta {url, base_sha256, zck, zck_size, header_size, chunks}.
    Artifacts are named by the image's sha256, so an image is compressed or chunked once.
    """
    if compression not in COMPRESSIONS:
        raise SwupdateError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    written_sha256, _checksum, written_size = file_digests(image["path"])
    # A readback script checks the sha256 of what a raw image wrote. A delta needs none: its
    # handler checks the sha256 of every chunk, from the source slot or downloaded, before
    # the chained raw handler writes it (handlers/delta_handler.c), and a second pass over
    # the whole slot would double the device's hashing.
    prepared = {
        **image,
        "written_sha256": written_sha256,
        "written_size": written_size,
        "compressed": None,
        "encrypted": False,
        "readback": not image.get("delta_base"),
    }
    if image.get("delta_base"):
        if aes_key:
            raise SwupdateError(f"{image['name']}: a delta cannot be encrypted (swupdate 2022.12's delta handler fetches its chunks as plain zchunk)")
        if not delta_url or not delta_dir:
            raise SwupdateError(f"{image['name']}: a delta needs delta_url and delta_dir (where the chunks are served with HTTP range requests)")
        if any(char.isspace() or char in "\"'\\" for char in delta_url) or not re.fullmatch(r"https?://\S+", delta_url):
            raise SwupdateError(f"delta_url {delta_url!r} is not an http(s) URL")
        base_sha256, _checksum, _size = file_digests(image["delta_base"])
        zck_name = f"{written_sha256}.zck"
        info = {}

        def make_zck(temporary):
            info.update(zchunk(image["path"], temporary))
            os.replace(temporary + ".header", os.path.join(work_dir, zck_name + ".header"))

        zck = _artifact(work_dir, zck_name, make_zck)
        header = zck + ".header"
        if not os.path.isfile(header):
            os.unlink(zck)
            zck = _artifact(work_dir, zck_name, make_zck)
        if not info:  # made by an earlier build
            info["chunks"] = zchunk_chunks(zck)
        served_name = f"{image['name']}-{written_sha256[:16]}.zck"
        served = os.path.join(delta_dir, served_name)
        if not _same_file(zck, served):
            shutil.copyfile(zck, served + ".tmp")
            os.replace(served + ".tmp", served)
        prepared.update(
            member=image["name"] + ".zck-header",
            artifact=header,
            delta={
                "url": delta_url.rstrip("/") + "/" + served_name,
                "base_sha256": base_sha256,
                "zck": served,
                "zck_size": os.path.getsize(served),
                "header_size": os.path.getsize(header),
                "chunks": info.get("chunks"),
            },
        )
    else:
        artifact, member = image["path"], image["name"]
        if compression == "zstd":
            artifact = _artifact(work_dir, f"{written_sha256}.zst{level}", lambda out: compress_zstd(image["path"], out, level))
            member += ".zst"
            prepared["compressed"] = "zstd"
        if aes_key:
            key, _file_iv = read_aes_key(aes_key)
            plain_sha256, _checksum, _size = file_digests(artifact)
            iv = image_ivt(key, plain_sha256)
            key_id = hmac.new(key, b"n3x artifact", hashlib.sha256).hexdigest()[:16]
            source = artifact
            artifact = _artifact(work_dir, f"{plain_sha256}.{key_id}.aes", lambda out: encrypt_aes_cbc(source, out, key, iv))
            member += ".enc"
            prepared.update(encrypted=True, ivt=iv.hex())
        prepared.update(member=member, artifact=artifact)
    prepared["sha256"], _checksum, prepared["size"] = file_digests(prepared["artifact"])
    return prepared


# --- the bundle's scripts ------------------------------------------------------------


def check_preserve(paths):
    """Absolute paths (a trailing glob allowed) to carry into the updated slot; no '..', no blanks."""
    checked = []
    for index, path in enumerate(paths or []):
        text = str(path)
        if not _PRESERVE.fullmatch(text) or "/../" in text + "/" or "/./" in text + "/" or text.startswith(("/proc", "/sys", "/dev", "/run", "/boot")):
            raise SwupdateError(
                f"preserve[{index}]: {text!r} must be an absolute path of letters, digits and ._@+*- without '..', outside /proc, /sys, /dev, /run and /boot"
            )
        checked.append(text)
    return checked


def base_check_script(slot, base_sha256, grubenv="/boot/grub/grubenv"):
    """Preinstall script of a delta to `slot`: refuse it, before anything is written, unless the
    source slot (the other one, which the node runs) holds the image the delta was made against."""
    source = inactive_slot(slot)
    variable = IMAGE_VARIABLE.format(slot=source)
    return f"""#!/bin/sh
# n3x (swupdate preinstall): this delta rebuilds slot {slot} from the chunks of slot {source}.
# Refuse it unless slot {source} holds the image it was made against ({variable} in grubenv).
set -eu
want={_check_sha256(base_sha256, "delta base")}
have=$(sed -n 's/^{variable}=//p' {grubenv} 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  echo "n3x: delta base mismatch: this delta needs slot {source} to hold image $want; it holds ${{have:-an unrecorded image}}" >&2
  exit 1
fi
echo "n3x: delta base {base_sha256[:16]} matches slot {source}"
"""


def preserve_script(slot, device, paths):
    """Postinstall script: copy the preserved paths of the running system into `slot`, which the
    bundle just wrote (mounted from `device`), so that the node boots the update as itself.

    Run with two arguments (SOURCE_ROOT TARGET_ROOT) it only copies, which tests use.
    """
    paths = check_preserve(paths)
    target = device.format(slot=slot)
    if not _DEVICE.fullmatch(device):
        raise SwupdateError(f"device {device!r} is not a plain device path")
    return f"""#!/bin/sh
# n3x (swupdate postinstall): carry this node's identity and configuration into slot {slot},
# which this bundle has just written, so that the node boots the update as itself.
set -eu
inside() {{
  case $(realpath -m "$1") in "$(realpath "$2")" | "$(realpath "$2")"/*) return 0 ;; esac
  return 1
}}
copy() {{
  src=$1 dst=$2
  for path in {" ".join(paths)}; do
    for found in "$src"$path; do
      [ -e "$found" ] || [ -L "$found" ] || continue
      rel=${{found#"$src"}}
      parent=$(dirname "$rel")
      # Never write through a symlink of the new slot to somewhere outside it.
      inside "$dst$parent" "$dst" || {{ echo "n3x: $parent leaves the new slot (a symlink); not preserving $rel" >&2; exit 1; }}
      if [ -d "$found" ] && [ ! -L "$found" ]; then
        inside "$dst$rel" "$dst" || {{ echo "n3x: $rel leaves the new slot (a symlink); not preserving it" >&2; exit 1; }}
      fi
      mkdir -p "$dst$parent"
      cp -a --remove-destination "$found" "$dst$parent/"
      echo "n3x: preserved $rel"
    done
  done
}}
if [ $# -ge 2 ] && [ -n "$1" ]; then
  copy "$1" "$2"
  exit 0
fi
mnt=$(mktemp -d)
mount -t ext4 {target} "$mnt"
trap 'umount "$mnt" && rmdir "$mnt"' EXIT
copy "" "$mnt"
sync
"""  # noqa: S608 (a shell script, not SQL)


def _script(name, text):
    data = text.encode()
    return {"member": name, "data": data, "sha256": hashlib.sha256(data).hexdigest()}


def bundle_scripts(slots, root, preserve):
    """{slot: {role: script}} for the root image: the delta base check and the preserve script."""
    scripts = {}
    for slot in slots:
        scripts[slot] = {}
        if root.get("delta"):
            scripts[slot]["base_check"] = _script(f"n3x-base-check-{slot}.sh", base_check_script(slot, root["delta"]["base_sha256"]))
        if preserve:
            scripts[slot]["preserve"] = _script(f"n3x-preserve-{slot}.sh", preserve_script(slot, root["device"], preserve))
    return scripts


# --- the health check an updated slot must pass -------------------------------------

CONFIRM_CONF = "/etc/n3x/boot-confirm.conf"
_INTERFACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,14}")


def confirm_config(timeout=120, interfaces="auto", k3s="auto", command=""):
    """Text of /etc/n3x/boot-confirm.conf, which the A/B image's n3x-boot-confirm reads.

    interfaces: 'auto' (every Name= of the node's networkd units), 'none', or a list of
    names; k3s: auto (where enabled), yes or no; command: a shell command that must succeed.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 3600:
        raise SwupdateError(f"health_check.timeout {timeout!r} must be 1 to 3600 seconds")
    if isinstance(interfaces, str):
        if interfaces not in ("auto", "none"):
            raise SwupdateError(f"health_check.interfaces {interfaces!r} must be auto, none or a list of interface names")
        names = interfaces
    else:
        bad = [name for name in interfaces or [] if not _INTERFACE.fullmatch(str(name)) or str(name) in (".", "..")]
        if bad or not interfaces:
            raise SwupdateError(f"health_check.interfaces: {bad[0]!r} is not an interface name" if bad else "health_check.interfaces is empty")
        names = " ".join(interfaces)
    if k3s not in ("auto", "yes", "no"):
        raise SwupdateError(f"health_check.k3s {k3s!r} must be auto, yes or no")
    if any(char in str(command) for char in "\n\r\0"):
        raise SwupdateError("health_check.command must be one line")
    return f"# n3x: the health check an updated slot must pass before it is confirmed\ntimeout={timeout}\ninterfaces={names}\nk3s={k3s}\ncheck={command}\n"


def write_confirm_config(text, path=CONFIRM_CONF):
    """Write the health check config atomically (mode 0644); True when it changed."""
    try:
        with open(path) as handle:
            if handle.read() == text:
                return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".boot-confirm.")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    return True


# --- bundle --------------------------------------------------------------------------


def bundle_members(
    version,
    hardware,
    images,
    slots,
    key=None,
    cert=None,
    description=None,
    work_dir=None,
    compression="none",
    level=DEFAULT_COMPRESSION_LEVEL,
    aes_key=None,
    delta_url=None,
    delta_dir=None,
    preserve=(),
    boot_attempts=None,
):
    """(sw-description text, cpio members, prepared images) for a bundle; unsigned when key and cert are None.

    work_dir keeps the artifacts (compressed, encrypted, chunked images); it must outlive
    the members, which name files in it.
    """
    images = check_images(images)
    preserve = check_preserve(preserve)
    if boot_attempts is not None:
        check_boot_attempts(boot_attempts)
    prepared = [prepare_image(image, work_dir, compression, level, aes_key, delta_url, delta_dir) for image in images]
    scripts = bundle_scripts(slots, prepared[0], preserve)
    text = render_sw_description(version, hardware, prepared, slots, description, scripts, boot_attempts)
    members = [("sw-description", text.encode())]
    if key is not None or cert is not None:
        if not (key and cert):
            raise SwupdateError("signing needs both signing_key and signing_cert")
        members.append(("sw-description.sig", cms_sign(text.encode(), key, cert)))
    members += [(image["member"], {"path": image["artifact"]}) for image in prepared]
    members += [(script["member"], script["data"]) for slot in slots for script in scripts[slot].values()]
    names = [name for name, _data in members]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SwupdateError(f"images: bundle member {duplicates[0]!r} appears twice (an image name clashes with a script or another image)")
    return text, members, prepared


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


def build_bundle(
    dest,
    version,
    hardware,
    images,
    slot="both",
    active_slot=None,
    key=None,
    cert=None,
    description=None,
    check_mode=False,
    mode=0o644,
    compression="none",
    level=DEFAULT_COMPRESSION_LEVEL,
    work_dir=None,
    aes_key=None,
    delta_url=None,
    delta_dir=None,
    preserve=(),
    boot_attempts=None,
):
    """Write the bundle to `dest` atomically when its bytes differ. Returns a result dict.

    The keyword arguments after `mode` are bundle_members'; without a work_dir the artifacts
    live in a temporary directory for the duration of the build.
    """
    slots = resolve_slots(slot, active_slot)
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        raise SwupdateError(f"dest: directory {directory} does not exist")
    if delta_dir and not os.path.isdir(delta_dir):
        raise SwupdateError(f"delta_dir: directory {delta_dir} does not exist")
    with contextlib.ExitStack() as stack:
        work = _work_dir_or_temporary(work_dir, stack)
        text, members, prepared = bundle_members(
            version, hardware, images, slots, key, cert, description, work, compression, level, aes_key, delta_url, delta_dir, preserve, boot_attempts
        )
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
    written = sum(image["written_size"] for image in prepared)
    return {
        "changed": changed,
        "sw_description": text,
        "slots": list(slots),
        "selections": {slot_name: selection(slot_name) for slot_name in slots},
        "signed": key is not None,
        "members": [name for name, _data in members],
        "sha256": sha256,
        "size": size,
        "images": [
            {
                "name": image["name"],
                "member": image["member"],
                "size": image["size"],
                "written_size": image["written_size"],
                "written_sha256": image["written_sha256"],
                "compressed": image["compressed"],
                "encrypted": image["encrypted"],
                "delta": {k: v for k, v in image["delta"].items() if k != "zck"} | {"zck": image["delta"]["zck"]} if image.get("delta") else None,
            }
            for image in prepared
        ],
        # bundle bytes per byte written to the slot
        "ratio": round(size / written, 4) if written else None,
    }


# --- reading a bundle on the device ----------------------------------------------------


def bundle_description(path, limit=1024 * 1024):
    """The sw-description text of a bundle file (its first cpio member), read without the rest."""
    with open(path, "rb") as handle:
        header = handle.read(110)
        if len(header) < 110 or header[:6] != CPIO_MAGIC:
            raise SwupdateError(f"{path}: not a swupdate bundle (no newc-crc cpio header)")
        try:
            size, namesize = int(header[54:62], 16), int(header[94:102], 16)
        except ValueError as exc:
            raise SwupdateError(f"{path}: bad cpio header") from exc
        name = handle.read(namesize)[:-1]
        if name != b"sw-description" or size > limit:
            raise SwupdateError(f"{path}: its first member is {name[:40]!r} ({size} bytes), not sw-description")
        handle.seek(-(110 + namesize) % 4, os.SEEK_CUR)
        return handle.read(size).decode(errors="replace")


def bundle_version(text):
    """The software version a sw-description gives, or None."""
    match = re.search(r'^\tversion = "([^"\n]*)";$', text, re.MULTILINE)
    return match.group(1) if match else None


def delta_bases(text):
    """The images a bundle's deltas were made against (their n3x-base-sha256), as a set."""
    return set(re.findall(DELTA_BASE_PROPERTY + r' = "([0-9a-f]{64})";', text))


def check_delta_base(text, grubenv, source_slot):
    """Refuse a delta whose base is not the image that `source_slot` holds (grubenv's record)."""
    bases = delta_bases(text)
    if not bases:
        return None
    held = grubenv.get(IMAGE_VARIABLE.format(slot=source_slot))
    if held not in bases:
        raise SwupdateError(
            f"delta base mismatch: the bundle is a delta against image {', '.join(sorted(b[:16] for b in bases))}, "
            f"but slot {source_slot} holds {held[:16] if held else 'an unrecorded image'}; nothing was written"
        )
    return held
