"""Validators match whole values: `$` with match() would accept a trailing newline, and a
prefix match would accept anything after a line break."""

import pathlib

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_k3s_install as install
from ansible_collections.n3x.cluster.plugins.module_utils import n3x_swupdate as swu
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_dhcp import dhcp_server_files
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s import _type_ok
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import ProfileError, load_profile


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: install.check_version("v1.35.0+k3s3\n"), install.ArtifactError),
        (lambda: install.normalise_sha256("a" * 64 + "\nb"), install.ArtifactError),
        (lambda: swu.parse_hardware(["board\n:1.0"]), swu.SwupdateError),
        (lambda: swu.check_images([{"name": "rootfs.ext4\n", "path": "/x"}]), swu.SwupdateError),
    ],
    ids=["k3s version", "sha256", "swupdate board", "swupdate image name"],
)
def test_a_trailing_newline_is_refused(call, error):
    with pytest.raises(error):
        call()


def test_a_duration_with_a_newline_is_no_duration():
    assert _type_ok("duration", "30s")
    assert not _type_ok("duration", "30s\n")


@pytest.mark.parametrize("interface", ["eth1\ndhcp-range=10.0.0.1,10.0.0.9", "..", "eth1/x", "a-very-long-ifname0"])
def test_the_dhcp_server_interface_is_an_interface_name(interface):
    profile = load_profile("dhcp-simple", str(pathlib.Path(__file__).resolve().parents[2] / "profiles"))[1]
    with pytest.raises(ProfileError, match=r"^DHCP server: interface: .* is not an interface name$"):
        dhcp_server_files(profile, interface)
