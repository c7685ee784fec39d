"""Where k3s comes from, how it is verified, and the unit that runs it.

The files checksummed here are small test files made in tmp_path; none is ever run.
"""

import hashlib
import io
import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import GENERATED_MARKER
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s_install import (
    DEFAULT_VERSION,
    ArtifactError,
    ChecksumMismatch,
    artifact_names,
    check_version,
    file_sha256,
    image_names,
    k3s_arch,
    k3s_unit,
    missing_source_message,
    parse_sha256sums,
    release_url,
    resolve_source,
    unit_name,
    verify_sha256,
)

TAMPERED = hashlib.sha256(b"tampered\n").hexdigest()
TEST = hashlib.sha256(b"test\n").hexdigest()
THREE_WAYS = (
    "no k3s v1.35.0+k3s3 binary for amd64 is available: set k3s_binary_path=/path/to/k3s, "
    "or k3s_airgap_dir=DIR with k3s, k3s-airgap-images-amd64.tar.zst and sha256sum-amd64.txt, "
    "or allow download of v1.35.0+k3s3 from https://github.com/k3s-io/k3s/releases/download/v1.35.0%2Bk3s3/ with k3s_download=true"
)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def no_network(url, timeout):
    raise AssertionError(f"tried to download {url}")


def make_airgap(directory, arch="amd64", binary=b"test binary, not k3s\n", images=b"test images\n", sums=None):
    names = artifact_names(arch)
    directory.mkdir(exist_ok=True)
    (directory / names["binary"]).write_bytes(binary)
    (directory / names["images"]).write_bytes(images)
    sums = sums if sums is not None else {names["binary"]: sha(binary), names["images"]: sha(images)}
    (directory / names["checksums"]).write_text("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    return names


# --- architectures, names, URLs


@pytest.mark.parametrize(("machine", "arch"), [("x86_64", "amd64"), ("amd64", "amd64"), ("aarch64", "arm64"), ("arm64", "arm64"), (" AARCH64\n", "arm64")])
def test_machine_names_map_to_k3s_arches(machine, arch):
    assert k3s_arch(machine) == arch


@pytest.mark.parametrize("machine", ["armv7l", "riscv64", "i686", ""])
def test_unsupported_arch_names_the_supported_ones(machine):
    with pytest.raises(ArtifactError, match="has no k3s release; supported: aarch64, amd64, arm64, x86_64"):
        k3s_arch(machine)


def test_artifact_names_per_arch():
    assert artifact_names("x86_64") == {"binary": "k3s", "checksums": "sha256sum-amd64.txt", "images": "k3s-airgap-images-amd64.tar.zst"}
    assert artifact_names("aarch64") == {"binary": "k3s-arm64", "checksums": "sha256sum-arm64.txt", "images": "k3s-airgap-images-arm64.tar.zst"}


def test_release_url_encodes_plus():
    assert release_url("v1.35.0+k3s3", "k3s") == "https://github.com/k3s-io/k3s/releases/download/v1.35.0%2Bk3s3/k3s"
    assert release_url("v1.34.2-rc1+k3s1", "sha256sum-arm64.txt").endswith("/v1.34.2-rc1%2Bk3s1/sha256sum-arm64.txt")


@pytest.mark.parametrize("version", ["latest", "1.35.0+k3s3", "v1.35.0", "v1.35.0+k3s3/../../x", "v1.35.0+k3s3 ", None])
def test_versions_that_are_not_release_tags_are_refused(version):
    with pytest.raises(ArtifactError, match=re.escape("is not a k3s release tag like v1.35.0+k3s3")):
        check_version(version)


# --- checksums

RELEASE_SUMS = f"""{"a" * 64}  k3s
{"b" * 64}  k3s-airgap-images-amd64.tar
{"c" * 64}  k3s-airgap-images-amd64.tar.zst
{"D" * 64} *./dist/k3s-arm64

# comment
"""


def test_parse_release_sha256sum_file():
    assert parse_sha256sums(RELEASE_SUMS) == {
        "k3s": "a" * 64,
        "k3s-airgap-images-amd64.tar": "b" * 64,
        "k3s-airgap-images-amd64.tar.zst": "c" * 64,
        "k3s-arm64": "d" * 64,
    }


@pytest.mark.parametrize("line", ["deadbeef  k3s", f"{'a' * 64}", f"{'g' * 64}  k3s", "k3s  " + "a" * 64])
def test_malformed_sha256sum_line_is_named(line):
    with pytest.raises(ArtifactError, match=r"^sums.txt: line 2: .* is not 'SHA256  FILE'$"):
        parse_sha256sums(f"{'a' * 64}  ok\n{line}\n", "sums.txt")


def test_conflicting_entries_are_refused():
    with pytest.raises(ArtifactError, match="k3s is listed twice with different hashes"):
        parse_sha256sums(f"{'a' * 64}  k3s\n{'b' * 64}  k3s\n")


@given(st.dictionaries(st.from_regex(r"[A-Za-z0-9._-]{1,30}", fullmatch=True), st.binary(min_size=32, max_size=32), max_size=20))
def test_parse_reads_back_what_sha256sum_writes(entries):
    text = "".join(f"{digest.hex()}  {name}\n" for name, digest in entries.items())
    assert parse_sha256sums(text) == {name: digest.hex() for name, digest in entries.items()}


def test_file_sha256_streams_large_files(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one read chunk
    (tmp_path / "blob").write_bytes(data)
    assert file_sha256(tmp_path / "blob") == sha(data)


def test_verify_names_file_expected_and_actual(tmp_path):
    path = tmp_path / "artifact"
    path.write_bytes(b"one")
    assert verify_sha256(path, "SHA256:" + sha(b"one").upper()) == sha(b"one")
    with pytest.raises(ChecksumMismatch) as caught:
        verify_sha256(path, sha(b"two"))
    assert str(caught.value) == f"{path}: sha256 mismatch, refusing to use it: expected {sha(b'two')}, got {sha(b'one')}"


# --- choosing the source


def test_nothing_available_names_the_three_ways():
    with pytest.raises(ArtifactError) as caught:
        resolve_source("x86_64", opener=no_network)
    assert str(caught.value) == THREE_WAYS
    assert missing_source_message(DEFAULT_VERSION, "amd64") == THREE_WAYS


def test_three_ways_for_arm64_name_its_files():
    with pytest.raises(ArtifactError, match=re.escape("k3s_airgap_dir=DIR with k3s-arm64, k3s-airgap-images-arm64.tar.zst and sha256sum-arm64.txt")):
        resolve_source("aarch64", opener=no_network)


def test_missing_binary_path_is_named_with_the_three_ways(tmp_path):
    with pytest.raises(ArtifactError) as caught:
        resolve_source("amd64", binary_path=str(tmp_path / "nope"), opener=no_network)
    assert str(caught.value) == f"k3s_binary_path {tmp_path / 'nope'}: no such file. {THREE_WAYS}"


def test_binary_path_with_checksum(tmp_path):
    path = tmp_path / "k3s"
    path.write_bytes(b"test binary, not k3s\n")
    found = resolve_source("amd64", binary_path=str(path), binary_checksum=sha(path.read_bytes()), opener=no_network)
    assert found["source"] == "binary_path"
    assert found["binary"] == str(path)
    assert found["binary_sha256"] == sha(path.read_bytes())
    assert found["verified"] is True
    assert found["images"] is None
    assert found["warnings"] == []


def test_binary_path_with_an_airgap_dir_still_installs_its_images(tmp_path):
    """The binary comes from the path, the images from the airgap directory (never dropped)."""
    path = tmp_path / "own" / "k3s"
    path.parent.mkdir()
    path.write_bytes(b"test binary, not k3s\n")
    make_airgap(tmp_path / "airgap", binary=b"another test binary\n")
    found = resolve_source("amd64", binary_path=str(path), binary_checksum=sha(path.read_bytes()), airgap_dir=str(tmp_path / "airgap"))
    assert found["source"] == "binary_path"
    assert found["binary"] == str(path)
    assert found["images"] == str(tmp_path / "airgap" / "k3s-airgap-images-amd64.tar.zst")
    assert found["images_sha256"] == sha(b"test images\n")
    (tmp_path / "airgap" / "k3s-airgap-images-amd64.tar.zst").write_bytes(b"damaged")
    with pytest.raises(ChecksumMismatch, match=r"k3s-airgap-images-amd64\.tar\.zst: sha256 mismatch"):
        resolve_source("amd64", binary_path=str(path), binary_checksum=sha(path.read_bytes()), airgap_dir=str(tmp_path / "airgap"))


def test_binary_path_is_checked_against_the_release_sums_beside_it(tmp_path):
    path = tmp_path / "k3s"
    path.write_bytes(b"test\n")
    (tmp_path / "sha256sum-amd64.txt").write_text(f"{TEST}  k3s\n")
    found = resolve_source("amd64", binary_path=str(path))
    assert found["verified"] is True
    assert found["checksum_file"] == str(tmp_path / "sha256sum-amd64.txt")
    (tmp_path / "sha256sum-amd64.txt").write_text(f"{TAMPERED}  k3s\n")
    with pytest.raises(ChecksumMismatch):
        resolve_source("amd64", binary_path=str(path))


def test_binary_path_with_wrong_checksum_is_refused(tmp_path):
    path = tmp_path / "k3s"
    path.write_bytes(b"tampered\n")
    with pytest.raises(ChecksumMismatch, match="^" + re.escape(f"{path}: sha256 mismatch, refusing to use it: expected {'0' * 64}, got {TAMPERED}") + "$"):
        resolve_source("amd64", binary_path=str(path), binary_checksum="0" * 64)


def test_binary_path_checked_against_checksum_file_by_its_name_or_the_asset_name(tmp_path):
    path = tmp_path / "k3s-v1.35"
    path.write_bytes(b"test\n")
    (tmp_path / "sums.txt").write_text(f"{TEST}  k3s-v1.35\n")
    assert resolve_source("amd64", binary_path=str(path), checksum_file=str(tmp_path / "sums.txt"))["verified"] is True
    (tmp_path / "sums.txt").write_text(f"{TEST}  k3s\n")
    assert resolve_source("amd64", binary_path=str(path), checksum_file=str(tmp_path / "sums.txt"))["verified"] is True
    (tmp_path / "sums.txt").write_text(f"{TEST}  k3s-arm64\n")
    with pytest.raises(ArtifactError, match=re.escape("sums.txt: has no entry for k3s-v1.35 or k3s") + "$"):
        resolve_source("amd64", binary_path=str(path), checksum_file=str(tmp_path / "sums.txt"))
    (tmp_path / "sums.txt").write_text(f"{sha(b'other')}  k3s\n")
    with pytest.raises(ChecksumMismatch):
        resolve_source("amd64", binary_path=str(path), checksum_file=str(tmp_path / "sums.txt"))


def test_binary_path_without_checksum_is_refused_unless_the_user_opts_out(tmp_path):
    path = tmp_path / "k3s"
    path.write_bytes(b"test\n")
    with pytest.raises(ArtifactError) as caught:
        resolve_source("amd64", binary_path=str(path))
    assert str(caught.value) == (
        f"k3s_binary_path {path}: no sha256 to check it against: set k3s_binary_checksum=SHA256, or k3s_checksum_file=FILE "
        "(the release's sha256sum-amd64.txt; one beside the binary is used by itself), or accept an unverified binary "
        "knowingly with k3s_allow_unverified_binary=true"
    )
    found = resolve_source("amd64", binary_path=str(path), allow_unverified=True)
    assert found["verified"] is False
    assert found["binary_sha256"] == sha(b"test\n")
    assert found["warnings"] == [f"k3s_binary_path {path} is used UNVERIFIED (k3s_allow_unverified_binary=true): no sha256 was checked"]


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_airgap_dir_verifies_binary_and_images(tmp_path, arch):
    names = make_airgap(tmp_path / "airgap", arch)
    found = resolve_source(arch, airgap_dir=str(tmp_path / "airgap"), allow_download=True, opener=no_network)
    assert found["source"] == "airgap_dir"
    assert found["binary"] == str(tmp_path / "airgap" / names["binary"])
    assert found["images"] == str(tmp_path / "airgap" / names["images"])
    assert found["binary_sha256"] == sha(b"test binary, not k3s\n")
    assert found["images_sha256"] == sha(b"test images\n")
    assert found["verified"] is True


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar"])
def test_airgap_images_in_any_release_format_are_installed(tmp_path, suffix):
    """The release's tarball as .tar.zst, .tar.gz or .tar (k3s imports each; k3s-ansible's
    airgap role copies all three), checked against its own entry in the sums file."""
    airgap = tmp_path / "airgap"
    make_airgap(airgap)
    (airgap / "k3s-airgap-images-amd64.tar.zst").unlink()
    (airgap / f"k3s-airgap-images-amd64{suffix}").write_bytes(b"other images\n")
    sums = {"k3s": sha(b"test binary, not k3s\n"), f"k3s-airgap-images-amd64{suffix}": sha(b"other images\n")}
    (airgap / "sha256sum-amd64.txt").write_text("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    found = resolve_source("amd64", airgap_dir=str(airgap))
    assert (found["images"], found["images_sha256"]) == (str(airgap / f"k3s-airgap-images-amd64{suffix}"), sha(b"other images\n"))
    binary = tmp_path / "k3s"
    binary.write_bytes(b"test\n")
    found = resolve_source("amd64", binary_path=str(binary), binary_checksum=sha(b"test\n"), airgap_dir=str(airgap))
    assert found["images"] == str(airgap / f"k3s-airgap-images-amd64{suffix}")


def test_airgap_images_zstd_preferred_and_only_one_installed(tmp_path):
    make_airgap(tmp_path)
    (tmp_path / "k3s-airgap-images-amd64.tar").write_bytes(b"plain images\n")
    assert resolve_source("amd64", airgap_dir=str(tmp_path))["images"] == str(tmp_path / "k3s-airgap-images-amd64.tar.zst")
    assert image_names("aarch64") == ["k3s-airgap-images-arm64.tar.zst", "k3s-airgap-images-arm64.tar.gz", "k3s-airgap-images-arm64.tar"]


def test_airgap_binary_that_does_not_match_is_refused(tmp_path):
    make_airgap(tmp_path, sums={"k3s": sha(b"the real one"), "k3s-airgap-images-amd64.tar.zst": sha(b"test images\n")})
    with pytest.raises(ChecksumMismatch) as caught:
        resolve_source("amd64", airgap_dir=str(tmp_path))
    assert caught.value.path == str(tmp_path / "k3s")
    assert caught.value.expected == sha(b"the real one")
    assert caught.value.actual == sha(b"test binary, not k3s\n")
    assert str(caught.value).startswith(f"{tmp_path / 'k3s'}: sha256 mismatch, refusing to use it: expected ")


def test_airgap_image_tarball_that_does_not_match_is_refused(tmp_path):
    make_airgap(tmp_path, images=b"truncated")
    (tmp_path / "k3s-airgap-images-amd64.tar.zst").write_bytes(b"truncat")
    with pytest.raises(ChecksumMismatch) as caught:
        resolve_source("amd64", airgap_dir=str(tmp_path))
    assert str(caught.value) == (
        f"{tmp_path / 'k3s-airgap-images-amd64.tar.zst'}: sha256 mismatch, refusing to use it: expected {sha(b'truncated')}, got {sha(b'truncat')}"
    )


def test_airgap_dir_missing_files_are_named(tmp_path):
    make_airgap(tmp_path)
    (tmp_path / "k3s-airgap-images-amd64.tar.zst").unlink()
    (tmp_path / "sha256sum-amd64.txt").unlink()
    missing = "k3s-airgap-images-amd64.tar.zst (or k3s-airgap-images-amd64.tar.gz, k3s-airgap-images-amd64.tar), sha256sum-amd64.txt."
    with pytest.raises(ArtifactError, match="^" + re.escape(f"k3s_airgap_dir {tmp_path}: missing {missing}")):
        resolve_source("amd64", airgap_dir=str(tmp_path))


def test_airgap_checksum_file_without_an_entry_is_refused(tmp_path):
    make_airgap(tmp_path, sums={"k3s": sha(b"test binary, not k3s\n")})
    with pytest.raises(ArtifactError, match=re.escape("sha256sum-amd64.txt: has no entry for k3s-airgap-images-amd64.tar.zst")):
        resolve_source("amd64", airgap_dir=str(tmp_path))


# --- download (with a stand-in opener: no network in tests)


class FakeRelease:
    def __init__(self, files):
        self.files = files
        self.fetched = []

    def __call__(self, url, timeout):
        self.fetched.append(url)
        return io.BytesIO(self.files[url.rsplit("/", 1)[1]])


def test_download_only_when_allowed_and_verified(tmp_path):
    release = FakeRelease({"sha256sum-amd64.txt": f"{sha(b'release bytes')}  k3s\n".encode(), "k3s": b"release bytes"})
    with pytest.raises(ArtifactError, match="or allow download"):
        resolve_source("amd64", download_dir=str(tmp_path), opener=release)
    assert release.fetched == []
    found = resolve_source("amd64", allow_download=True, download_dir=str(tmp_path), opener=release)
    target = tmp_path / DEFAULT_VERSION / "k3s"
    assert found["source"] == "download"
    assert found["binary"] == str(target)
    assert found["changed"] is True
    assert found["url"] == "https://github.com/k3s-io/k3s/releases/download/v1.35.0%2Bk3s3/k3s"
    assert release.fetched == ["https://github.com/k3s-io/k3s/releases/download/v1.35.0%2Bk3s3/sha256sum-amd64.txt", found["url"]]
    assert target.read_bytes() == b"release bytes"
    again = resolve_source("amd64", allow_download=True, download_dir=str(tmp_path), opener=release)
    assert again["changed"] is False
    assert len(release.fetched) == 3  # only the checksum file again


def test_download_that_does_not_match_is_refused_and_not_kept(tmp_path):
    release = FakeRelease({"sha256sum-arm64.txt": f"{sha(b'release bytes')}  k3s-arm64\n".encode(), "k3s-arm64": b"tampered bytes"})
    with pytest.raises(ChecksumMismatch, match="k3s-arm64: sha256 mismatch, refusing to use it"):
        resolve_source("arm64", allow_download=True, download_dir=str(tmp_path), opener=release)
    assert os.listdir(tmp_path / DEFAULT_VERSION) == []


# --- the unit

OFFICIAL = [
    "Wants=network-online.target",
    "After=network-online.target",
    "WantedBy=multi-user.target",
    "Type=notify",
    "KillMode=process",
    "Delegate=yes",
    "LimitNOFILE=1048576",
    "LimitNPROC=infinity",
    "LimitCORE=infinity",
    "TasksMax=infinity",
    "TimeoutStartSec=0",
    "Restart=always",
    "RestartSec=5s",
    "ExecStartPre=-/sbin/modprobe br_netfilter",
    "ExecStartPre=-/sbin/modprobe overlay",
]


@pytest.mark.parametrize(("role", "name"), [("server", "k3s.service"), ("agent", "k3s-agent.service")])
def test_unit_has_the_official_semantics_and_no_secret(role, name):
    text = k3s_unit(role)
    lines = text.splitlines()
    assert lines[0].startswith(GENERATED_MARKER)
    directives = [line for line in lines if line and not line.startswith(("#", "["))]
    for directive in OFFICIAL:
        assert directives.count(directive) == 1, directive
    # install.sh create_systemd_service_file: these three, in this order.
    environment = [line for line in directives if line.startswith("EnvironmentFile=")]
    assert environment == ["EnvironmentFile=-/etc/default/%N", "EnvironmentFile=-/etc/sysconfig/%N", f"EnvironmentFile=-/etc/systemd/system/{name}.env"]
    exec_start = [line for line in directives if line.startswith("ExecStart=")]
    assert exec_start == [f"ExecStart=/usr/local/bin/k3s {role}"]
    assert "token" not in text.lower()
    assert "K3S_" not in text
    assert "\\\n" not in text  # no continued ExecStart hiding arguments
    assert unit_name(role) == name
    sections = [line for line in lines if line.startswith("[")]
    assert sections == ["[Unit]", "[Install]", "[Service]"]


def test_unit_for_unknown_role_is_refused():
    with pytest.raises(ArtifactError, match="k3s role 'master' is not one of: server, agent"):
        k3s_unit("master")
