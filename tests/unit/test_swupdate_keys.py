"""The fleet's SWUpdate trust roots: key directory outside caches, never deleted, no silent replacement."""

import os
import shutil

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_swupdate as swu
from ansible_collections.n3x.cluster.plugins.module_utils import n3x_swupdate_keys as store

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def make(directory, cache, **kw):
    return store.key_store(str(directory), cache_dirs=[str(cache)], bits=2048, **kw)


@pytest.fixture
def paths(tmp_path):
    return tmp_path / "data" / "keys", tmp_path / "cache"


def test_first_run_makes_the_pair_and_records_it_then_keeps_it(paths):
    keys, cache = paths
    first = make(keys, cache, aes=True)
    assert first["changed"]
    assert sorted(os.listdir(keys)) == ["aes.key", "issued.log", "swupdate.crt", "swupdate.key"]
    assert keys.stat().st_mode & 0o777 == 0o700
    for name in ("swupdate.key", "aes.key"):
        assert (keys / name).stat().st_mode & 0o777 == 0o600
    log = (keys / "issued.log").read_text()
    assert f"signing {first['fingerprint']}" in log
    assert " aes " in log
    key_bytes = (keys / "swupdate.key").read_bytes()
    assert key_bytes.decode().split("\n")[1] not in log
    second = make(keys, cache, aes=True)
    assert not second["changed"]
    assert second["fingerprint"] == first["fingerprint"]
    assert (keys / "swupdate.key").read_bytes() == key_bytes


def test_a_key_directory_in_a_cache_is_refused(paths):
    _keys, cache = paths
    with pytest.raises(swu.SwupdateError, match="inside the cache directory"):
        make(cache / "n3x" / "swupdate-keys", cache)
    assert not cache.exists()


def test_default_cache_dirs_follow_xdg(tmp_path):
    assert store.default_cache_dirs({"HOME": "/home/u"}) == ["/home/u/.cache"]
    assert store.default_cache_dirs({"HOME": "/home/u", "XDG_CACHE_HOME": "/var/cache/u"}) == ["/home/u/.cache", "/var/cache/u"]


def test_a_lost_pair_is_never_replaced_silently(paths):
    keys, cache = paths
    first = make(keys, cache)
    for name in ("swupdate.key", "swupdate.crt"):
        (keys / name).unlink()
    with pytest.raises(swu.SwupdateError, match=f"certificate {first['fingerprint'][:16]} was issued here"):
        make(keys, cache)
    assert sorted(os.listdir(keys)) == ["issued.log"]
    replaced = make(keys, cache, replace=True)
    assert replaced["fingerprint"] != first["fingerprint"]
    assert (keys / "issued.log").read_text().count(" signing ") == 2


def test_a_lone_certificate_is_retired_not_deleted(paths):
    keys, cache = paths
    first = make(keys, cache)
    (keys / "swupdate.key").unlink()
    with pytest.raises(swu.SwupdateError, match=r"only .*swupdate.crt exists"):
        make(keys, cache)
    result = make(keys, cache, replace=True)
    assert result["retired"] == [str(keys / "retired" / f"{first['fingerprint']}.crt")]
    assert (keys / "retired" / f"{first['fingerprint']}.crt").exists()
    assert (keys / "swupdate.key").exists()


def test_a_lone_key_is_refused_even_with_replace(paths):
    keys, cache = paths
    make(keys, cache)
    (keys / "swupdate.crt").unlink()
    with pytest.raises(swu.SwupdateError, match=r"only .*swupdate.key exists"):
        make(keys, cache, replace=True)


def test_keys_in_the_legacy_cache_location_are_not_replaced(paths, tmp_path):
    keys, cache = paths
    legacy = tmp_path / "old-cache" / "n3x" / "swupdate-keys"
    make(legacy, tmp_path / "elsewhere")
    with pytest.raises(swu.SwupdateError, match="Move them to"):
        make(keys, cache, legacy_dirs=[str(legacy)])
    assert not keys.exists()


def test_a_lost_aes_key_is_not_replaced_silently(paths):
    keys, cache = paths
    make(keys, cache, aes=True)
    (keys / "aes.key").unlink()
    with pytest.raises(swu.SwupdateError, match="an AES key was issued here"):
        make(keys, cache, aes=True)
    make(keys, cache, aes=True, replace=True)
    assert (keys / "aes.key").exists()


def test_modes_are_restored_and_a_foreign_certificate_refused(paths, tmp_path):
    keys, cache = paths
    make(keys, cache)
    (keys / "swupdate.key").chmod(0o644)
    keys.chmod(0o755)
    assert make(keys, cache)["changed"]
    assert (keys / "swupdate.key").stat().st_mode & 0o777 == 0o600
    assert keys.stat().st_mode & 0o777 == 0o700
    swu.generate_signing_key(str(tmp_path / "o.key"), str(tmp_path / "o.crt"), bits=2048)
    shutil.copy(tmp_path / "o.crt", keys / "swupdate.crt")
    with pytest.raises(swu.SwupdateError, match="is not the certificate of"):
        make(keys, cache)


def test_symlinks_are_refused(paths, tmp_path):
    keys, cache = paths
    real = tmp_path / "real"
    real.mkdir()
    keys.parent.mkdir(parents=True)
    keys.symlink_to(real)
    with pytest.raises(swu.SwupdateError, match="symlink"):
        make(keys, cache)
    keys.unlink()
    keys.mkdir(mode=0o700)
    (keys / "swupdate.key").symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(swu.SwupdateError, match="symlink"):
        make(keys, cache)
    assert not (tmp_path / "elsewhere.key").exists()


def test_check_mode_changes_nothing(paths):
    keys, cache = paths
    result = make(keys, cache, check_mode=True)
    assert result["changed"]
    assert not keys.exists()
