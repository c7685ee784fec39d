# Copyright: n3x developers
# MIT License
"""The fleet's SWUpdate trust roots: the signing key pair (and the optional AES key) in a key
directory of their own.

Devices trust the certificate they were built or updated with, for years: the key that
signs their bundles is a trust root, not a cache entry. So the key directory
  - lies outside any cache directory (users clear caches), is 0700, the keys 0600;
  - is never cleaned: nothing here deletes a file (a replaced certificate is moved to
    retired/);
  - keeps issued.log, a line per key n3x generated there (date, kind, sha256 fingerprint),
    so that a lost key is noticed: a new pair is generated silently only where no key was
    ever issued. Otherwise it takes replace=True, and the devices then need the new
    certificate (an update signed with the old key, or a re-flash).
Nothing here imports Ansible.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import subprocess

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_swupdate as swu

HISTORY = "issued.log"
RETIRED = "retired"
KEY_NAME, CERT_NAME, AES_NAME = "swupdate.key", "swupdate.crt", "aes.key"


def _inside(path, directory):
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def default_cache_dirs(env=None):
    """Directories that hold caches (XDG_CACHE_HOME, ~/.cache): keys never live there."""
    env = os.environ if env is None else env
    home = env.get("HOME") or os.path.expanduser("~")
    return sorted({env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), os.path.join(home, ".cache")})


def check_directory(directory, cache_dirs):
    """Refuse a key directory that is relative, a symlink, or inside a cache directory."""
    if not os.path.isabs(directory):
        raise swu.SwupdateError(f"key directory {directory!r} must be an absolute path")
    if os.path.islink(directory.rstrip(os.sep)):
        raise swu.SwupdateError(f"key directory {directory} is a symlink; give the directory itself")
    for cache in cache_dirs:
        if _inside(directory, cache):
            raise swu.SwupdateError(
                f"key directory {directory} is inside the cache directory {cache}: signing keys are long-lived trust roots "
                "that devices rely on, and caches get cleared. Keep them elsewhere (the default is ~/.local/share/n3x/swupdate-keys)"
            )


def read_history(directory):
    """[(date, kind, fingerprint)] of the keys generated in directory."""
    try:
        with open(os.path.join(directory, HISTORY)) as handle:
            lines = handle.read(1024 * 1024).splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#"):
            entries.append((fields[0], fields[1], fields[2]))
    return entries


def _append_history(directory, kind, fingerprint, now=None):
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path = os.path.join(directory, HISTORY)
    new = not os.path.exists(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "a") as handle:
        if new:
            handle.write("# n3x: keys generated in this directory (devices may trust them); never edit or remove\n")
        handle.write(f"{stamp} {kind} {fingerprint}\n")


def _openssl_out(args, what):
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise swu.SwupdateError(f"{what}: {' '.join(result.stderr.strip().splitlines()[:2])}")
    return result.stdout


def cert_fingerprint(cert):
    """sha256 fingerprint of a PEM certificate, as hex without colons."""
    out = _openssl_out(["x509", "-in", cert, "-noout", "-fingerprint", "-sha256"], f"reading the certificate {cert}")
    match = re.search(r"=([0-9A-Fa-f:]+)", out)
    if not match:
        raise swu.SwupdateError(f"no fingerprint for {cert}")
    return match.group(1).replace(":", "").lower()


def aes_fingerprint(path):
    """An identifier of an AES key that reveals nothing of it (sha256 of sha256)."""
    key, iv = swu.read_aes_key(path)
    return hashlib.sha256(hashlib.sha256(key + iv).digest()).hexdigest()


def pair_matches(key, cert):
    """Whether the certificate is the key's (their public keys agree); the key is never printed."""
    public = _openssl_out(["pkey", "-in", key, "-pubout"], f"reading the key {key}")
    certified = _openssl_out(["x509", "-in", cert, "-noout", "-pubkey"], f"reading the certificate {cert}")
    return public.strip() == certified.strip()


def key_store(
    directory,
    aes=False,
    replace=False,
    common_name="n3x lab swupdate signing",
    days=3650,
    bits=3072,
    legacy_dirs=(),
    cache_dirs=None,
    check_mode=False,
):
    """Make sure directory holds the signing key pair (and the AES key with aes=True).

    Returns {changed, key, cert, aes_key, fingerprint, generated, retired}. Raises
    SwupdateError, changing nothing, when it would have to replace a key devices may trust.
    """
    cache_dirs = default_cache_dirs() if cache_dirs is None else cache_dirs
    check_directory(directory, cache_dirs)
    key, cert, aes_key = (os.path.join(directory, name) for name in (KEY_NAME, CERT_NAME, AES_NAME))
    for path in (key, cert, aes_key):
        if os.path.islink(path):
            raise swu.SwupdateError(f"{path} is a symlink; n3x does not follow symlinks out of the key directory")
    history = read_history(directory)
    issued = [fingerprint for _when, kind, fingerprint in history if kind == "signing"]
    result = {"changed": False, "key": key, "cert": cert, "aes_key": aes_key if aes else None, "generated": [], "retired": []}
    has_key, has_cert = os.path.exists(key), os.path.exists(cert)
    # Every refusal comes before anything is created or changed.
    if not has_key and not has_cert:
        for legacy in legacy_dirs:
            found = [name for name in (KEY_NAME, CERT_NAME, AES_NAME) if os.path.exists(os.path.join(legacy, name))]
            if found and not _inside(legacy, directory):
                raise swu.SwupdateError(
                    f"{legacy} holds {', '.join(found)} from an earlier n3x, which kept signing keys in a cache; devices may trust "
                    f"that certificate. Move them to {directory} (mode 0700, keys 0600) instead of generating a new pair"
                )
        if issued and not replace:
            raise swu.SwupdateError(
                f"{directory}: the signing key pair is gone, but certificate {issued[-1][:16]} was issued here ({HISTORY}) and devices "
                "may trust it. Restore the key and certificate, or set replace to make a new pair; devices then need its certificate "
                "(an update signed with the old key, or a re-flash)"
            )
    elif has_key != has_cert:
        present, missing = (key, cert) if has_key else (cert, key)
        if not (replace and has_cert):
            raise swu.SwupdateError(f"only {present} exists, {missing} is missing: restore it (or, for a lost key, set replace to retire the certificate)")
    if has_key and has_cert and not pair_matches(key, cert):
        raise swu.SwupdateError(f"{cert} is not the certificate of {key}")
    if aes and not os.path.exists(aes_key) and any(kind == "aes" for _when, kind, _fingerprint in history) and not replace:
        raise swu.SwupdateError(
            f"{aes_key} is gone, but an AES key was issued here ({HISTORY}) and devices hold it. Restore it, or set replace "
            "to make a new one; devices then need it before they can decrypt new bundles"
        )
    if not os.path.isdir(directory):
        result["changed"] = True
        if not check_mode:
            os.makedirs(directory, mode=0o700)
    elif os.stat(directory).st_mode & 0o777 != 0o700:
        result["changed"] = True
        if not check_mode:
            os.chmod(directory, 0o700)
    if has_key != has_cert:
        fingerprint = cert_fingerprint(cert)
        result["retired"].append(os.path.join(directory, RETIRED, f"{fingerprint}.crt"))
        result["changed"] = True
        if not check_mode:
            os.makedirs(os.path.join(directory, RETIRED), mode=0o700, exist_ok=True)
            shutil.move(cert, result["retired"][-1])
        has_cert = False
    if has_key and has_cert:
        if os.stat(key).st_mode & 0o777 != 0o600:
            result["changed"] = True
            if not check_mode:
                os.chmod(key, 0o600)
    elif not check_mode:
        swu.generate_signing_key(key, cert, common_name=common_name, days=days, bits=bits)
        _append_history(directory, "signing", cert_fingerprint(cert))
        result["generated"].append(cert)
        result["changed"] = True
    else:
        result["changed"] = True
    if aes:
        if os.path.exists(aes_key):
            if not check_mode:
                swu.read_aes_key(aes_key)
        else:
            result["changed"] = True
            if not check_mode:
                swu.generate_aes_key(aes_key)
                _append_history(directory, "aes", aes_fingerprint(aes_key))
                result["generated"].append(aes_key)
    result["fingerprint"] = cert_fingerprint(cert) if os.path.exists(cert) else None
    return result
