# Copyright: n3x developers
# MIT License
"""Each board's customisation of the BSP's rootfs, starting from the same clean state.

tools/l4t_create_default_user.sh (R36, johnnynunez/Linux_for_Tegra) changes the shared
``Linux_for_Tegra/rootfs`` in place: useradd/groupadd (etc/passwd, shadow, group, gshadow,
subuid, subgid and their ``-`` backups, home/<user>), etc/gdm3/custom.conf, the autologin
drop-ins, removes etc/systemd/system/default.target (the oem-config bypass), touches
etc/nv/nvautoconfig, writes etc/hostname and appends ``127.0.1.1 <host>`` to etc/hosts. Without
``-p`` it sets the password ``date +%s | sha256sum | base64 | head -c 8`` (guessable from the
flash time) and prints it. So before the first customisation n3x snapshots every such path
(and the ones n3x writes) under ``Linux_for_Tegra/.n3x/``, and before each board's it puts them
back exactly, removing only what an earlier n3x customisation recorded it created. Then:
the password is locked, only the SSH keys are installed, sshd takes keys only
(``PasswordAuthentication no`` in a drop-in) and the board gets its own SSH host key.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson import redact
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_jetson_bsp import DEFAULT_USER_SCRIPT

STATE_DIR = ".n3x"
PRISTINE_DIR = ".n3x/rootfs-pristine"
STATE_FILE = ".n3x/rootfs-state.json"
SSHD_DROPIN = "etc/ssh/sshd_config.d/10-n3x.conf"
HOST_KEY = "etc/ssh/ssh_host_ed25519_key"
# Everything l4t_create_default_user.sh (R36) or n3x changes at a fixed path.
TRACKED = (
    *(f"etc/{name}{suffix}" for name in ("passwd", "shadow", "group", "gshadow", "subuid", "subgid") for suffix in ("", "-")),
    "etc/hosts",
    "etc/hostname",
    "etc/gdm3/custom.conf",
    "etc/systemd/system/default.target",
    "etc/nv/nvautoconfig",
    "etc/systemd/system/getty@tty1.service.d/autologin.conf",
    *(f"etc/systemd/system/serial-getty@{c}.service.d/autologin.conf" for c in ("ttyS0", "ttyTCU0", "ttyAMA0", "ttyAMA6")),
    "usr/bin/qemu-aarch64-static",
    *(f"etc/ssh/ssh_host_{kind}_key{ext}" for kind in ("rsa", "ecdsa", "ed25519", "dsa") for ext in ("", ".pub")),
    SSHD_DROPIN,
)
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_HOSTNAME = re.compile(r"(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?")
_KEY = re.compile(
    r"(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\n\r]*)?"
)


class ImageError(Exception):
    """A refusal about the rootfs or the customisation."""


def check_user(user):
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise ImageError(f"user {user!r} is not a valid Linux user name")
    return user


def check_hostname(hostname):
    if not isinstance(hostname, str) or not _HOSTNAME.fullmatch(hostname):
        raise ImageError(f"host name {hostname!r} is not a valid host name (letters, digits, '-', at most 63)")
    return hostname


def check_keys(public_keys):
    keys = [k.strip() for k in (public_keys or []) if isinstance(k, str) and k.strip()]
    if not keys:
        raise ImageError("no SSH public key: without one nobody can log in to the board (its password is locked)")
    for key in keys:
        if not _KEY.fullmatch(key):
            raise ImageError(f"not an SSH public key line: {key[:40]!r}")
    return keys


def default_user_command(user, hostname):
    """argv of l4t_create_default_user.sh. No -p: a password never goes on a command line, and
    the script's own (guessable) one is locked right after."""
    return [f"./{DEFAULT_USER_SCRIPT}", "-u", check_user(user), "-n", check_hostname(hostname), "--accept-license"]


def _safe_path(rootfs, rel):
    """rootfs/rel, refusing any symlink among its parent directories (never write outside)."""
    if rel.startswith("/") or ".." in rel.split("/"):
        raise ImageError(f"{rel}: not a path inside the rootfs")
    current = rootfs
    for part in rel.split("/")[:-1]:
        current = os.path.join(current, part)
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return os.path.join(rootfs, rel)
        if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
            raise ImageError(f"{current} is a symlink or not a directory; refusing to write through it")
    return os.path.join(rootfs, rel)


def _remove(path):
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)  # rmtree never follows symlinks inside the tree
    else:
        os.unlink(path)


def _copy(src, dst):
    """Copy a file or symlink with its mode, owner and times (symlinks stay symlinks)."""
    mode = os.lstat(src)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    _remove(dst)
    if stat.S_ISLNK(mode.st_mode):
        os.symlink(os.readlink(src), dst)
        os.lchown(dst, mode.st_uid, mode.st_gid)
        return
    if not stat.S_ISREG(mode.st_mode):
        raise ImageError(f"{src} is neither a file nor a symlink; refusing to copy it")
    shutil.copy2(src, dst, follow_symlinks=False)
    os.chown(dst, mode.st_uid, mode.st_gid)


def _regular_users(rootfs):
    users = []
    path = _safe_path(rootfs, "etc/passwd")
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            fields = line.rstrip("\n").split(":")
            if len(fields) >= 7 and fields[2].isdigit() and 1000 <= int(fields[2]) < 60000:
                users.append(fields[0])
    return users


def _read_state(bsp_dir):
    path = os.path.join(bsp_dir, STATE_FILE)
    if os.path.islink(os.path.join(bsp_dir, STATE_DIR)) or os.path.islink(path):
        raise ImageError(f"{os.path.join(bsp_dir, STATE_DIR)} holds a symlink; refusing to read or write the rootfs state through it")
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ImageError(f"{path}: unreadable ({exc}); re-extract the sample rootfs and remove {os.path.join(bsp_dir, STATE_DIR)}") from None
    if not isinstance(state, dict) or not isinstance(state.get("pristine"), dict) or not isinstance(state.get("created"), list):
        raise ImageError(f"{path}: not an n3x rootfs state file")
    return state


def _write_state(bsp_dir, state):
    path = os.path.join(bsp_dir, STATE_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=1, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def snapshot(bsp_dir):
    """Record the clean rootfs once: a copy of every tracked path, or that it was absent."""
    rootfs = os.path.join(bsp_dir, "rootfs")
    state = _read_state(bsp_dir)
    if state is not None:
        return state
    users = _regular_users(rootfs)
    if users:
        raise ImageError(
            f"{rootfs} already has user {', '.join(users)}: it was customised before n3x saw it (l4t_create_default_user.sh or "
            "oem setup); extract the sample root filesystem again and run apply_binaries.sh"
        )
    state_dir = os.path.join(bsp_dir, STATE_DIR)
    if os.path.islink(state_dir) or (os.path.lexists(state_dir) and not os.path.isdir(state_dir)):
        raise ImageError(f"{state_dir} is a symlink or not a directory; refusing to keep the rootfs snapshot there")
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    os.chmod(state_dir, 0o700)  # copies of etc/shadow live here
    pristine_dir = os.path.join(bsp_dir, PRISTINE_DIR)
    _remove(pristine_dir)
    pristine = {}
    for rel in TRACKED:
        src = _safe_path(rootfs, rel)
        if os.path.lexists(src):
            _copy(src, os.path.join(pristine_dir, rel))
            pristine[rel] = "saved"
        else:
            pristine[rel] = "absent"
    state = {"pristine": pristine, "created": []}
    _write_state(bsp_dir, state)
    return state


def restore(bsp_dir):
    """Put every tracked path back as it was when snapshot() ran; returns the state."""
    rootfs = os.path.join(bsp_dir, "rootfs")
    state = snapshot(bsp_dir)
    pristine_dir = os.path.join(bsp_dir, PRISTINE_DIR)
    for rel in state["created"]:  # only what an n3x customisation recorded it created
        if isinstance(rel, str) and state["pristine"].get(rel, "absent") == "absent":
            _remove(_safe_path(rootfs, rel))
    for rel, kind in state["pristine"].items():
        dst = _safe_path(rootfs, rel)
        if kind == "saved":
            _copy(os.path.join(pristine_dir, rel), dst)
        else:
            _remove(dst)
    state["created"] = []
    _write_state(bsp_dir, state)
    return state


def _passwd_entry(rootfs, user):
    with open(_safe_path(rootfs, "etc/passwd"), encoding="utf-8", errors="replace") as handle:
        for line in handle:
            fields = line.rstrip("\n").split(":")
            if len(fields) >= 7 and fields[0] == user:
                return int(fields[2]), int(fields[3]), fields[5]
    raise ImageError(f"{rootfs}/etc/passwd has no user {user}: l4t_create_default_user.sh did not create it")


def _write_file(path, text, mode, uid=0, gid=0):
    tmp = path + ".n3x-tmp"
    _remove(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.chown(tmp, uid, gid)
    os.replace(tmp, path)


def lock_password(rootfs, user):
    """Replace the user's password hash in etc/shadow with '!' (locked, no hash of anything kept)."""
    path = _safe_path(rootfs, "etc/shadow")
    st = os.lstat(path)
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    found = False
    for index, line in enumerate(lines):
        fields = line.split(":")
        if len(fields) >= 9 and fields[0] == user:
            fields[1] = "!"
            lines[index] = ":".join(fields)
            found = True
    if not found:
        raise ImageError(f"{path} has no entry for {user}")
    _write_file(path, "\n".join(lines), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def install_access(rootfs, user, keys):
    """authorized_keys (only the given keys), a NOPASSWD sudoers drop-in and the sshd drop-in."""
    uid, gid, home = _passwd_entry(rootfs, user)
    home_rel = home.strip("/")
    if home_rel != f"home/{user}":
        raise ImageError(f"{user}'s home is {home}, not /home/{user}; refusing to write there")
    ssh_dir = _safe_path(rootfs, f"{home_rel}/.ssh/x")[:-2]
    if os.path.lexists(ssh_dir) and not stat.S_ISDIR(os.lstat(ssh_dir).st_mode):
        raise ImageError(f"{ssh_dir} is not a directory; refusing to write through it")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    os.chown(ssh_dir, uid, gid)
    _write_file(os.path.join(ssh_dir, "authorized_keys"), "\n".join(keys) + "\n", 0o600, uid, gid)
    sudoers = _safe_path(rootfs, f"etc/sudoers.d/90-n3x-{user}")
    os.makedirs(os.path.dirname(sudoers), exist_ok=True)
    _write_file(
        sudoers,
        f"# Written by n3x.cluster (jetson_flash): the password is locked; Ansible becomes root with the SSH key.\n{user} ALL=(ALL) NOPASSWD:ALL\n",
        0o440,
    )
    dropin = _safe_path(rootfs, SSHD_DROPIN)
    os.makedirs(os.path.dirname(dropin), exist_ok=True)
    # Ubuntu's sshd_config includes sshd_config.d/*.conf first, and the first value of a keyword
    # wins; HostKey lines add up, so naming one limits sshd to this board's own key. The password
    # field is "!" (locked): without PAM, sshd refuses every login, keys too, to an account whose
    # password starts with "!" (allowed_user() in OpenSSH's auth.c, LOCKED_PASSWD_PREFIX on Linux),
    # so UsePAM is pinned here rather than left to the sample rootfs's sshd_config.
    _write_file(
        dropin,
        "# Written by n3x.cluster (jetson_flash): keys only, and this board's own host key.\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\nUsePAM yes\n"
        f"HostKey /{HOST_KEY}\n",
        0o644,
    )


def install_host_key(rootfs, hostname, run):
    """A new ed25519 host key for this board (other ssh_host_* keys of the shared rootfs removed).

    ``run(argv) -> (rc, out, err)``. Returns the public key line ("ssh-ed25519 AAAA...").
    """
    for kind in ("rsa", "ecdsa", "ed25519", "dsa"):
        for ext in ("", ".pub"):
            _remove(_safe_path(rootfs, f"etc/ssh/ssh_host_{kind}_key{ext}"))
    key = _safe_path(rootfs, HOST_KEY)
    os.makedirs(os.path.dirname(key), exist_ok=True)
    rc, _out, err = run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{hostname}", "-f", key])
    if rc != 0:
        raise ImageError(f"ssh-keygen failed ({rc}): {err.strip()[:200]}")
    os.chmod(key, 0o600)
    os.chown(key, 0, 0)
    with open(key + ".pub", encoding="utf-8") as handle:
        fields = handle.read().split()
    if len(fields) < 2 or fields[0] != "ssh-ed25519":
        raise ImageError(f"{key}.pub is not an ed25519 public key")
    return f"{fields[0]} {fields[1]}"


def customise(bsp_dir, user, hostname, public_keys, run):
    """One board's image: clean state, NVIDIA's default user, password locked, keys only, own host key.

    ``run(argv, cwd=None) -> (rc, out, err)``. Returns the board's SSH host public key line.
    """
    check_user(user)
    check_hostname(hostname)
    keys = check_keys(public_keys)
    rootfs = os.path.join(bsp_dir, "rootfs")
    restore(bsp_dir)
    # Record the per-user paths that do not exist now, before the script creates them, so even
    # a failed run is undone next time; a path the clean rootfs already has is never recorded.
    state = _read_state(bsp_dir)
    fresh = {rel for rel in (f"home/{user}", f"etc/sudoers.d/90-n3x-{user}") if not os.path.lexists(_safe_path(rootfs, rel))}
    state["created"] = sorted(set(state["created"]) | fresh)
    _write_state(bsp_dir, state)
    argv = default_user_command(user, hostname)
    rc, out, err = run(argv, cwd=bsp_dir)
    if rc != 0:
        raise ImageError(f"{argv[0]} failed ({rc}): {redact(out + err).strip()[-1500:]}")
    lock_password(rootfs, user)
    install_access(rootfs, user, keys)
    return install_host_key(rootfs, hostname, lambda a: run(a, cwd=bsp_dir))
