"""One node's k3s checks: memory, version, Ready waits, tokens, the unit's environment file."""

import pathlib

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s_node import (
    NodeCheckError,
    env_file,
    installed_version,
    memory_check,
    no_proxy,
    parse_token,
    ready_timeout,
    token_matches,
    version_problem,
)
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import load_profile

REPO = pathlib.Path(__file__).resolve().parents[2]
CA = "a" * 64


def meminfo(kib):
    return f"MemTotal:       {kib} kB\nMemFree:          12345 kB\nMemAvailable:     23456 kB\n"


@pytest.fixture(scope="module")
def vlans():
    return load_profile("vlans", str(REPO / "profiles"))[1]


# --- memory (docs.k3s.io reference/resource-profiling, installation/requirements)


def test_a_512_mib_vm_is_no_k3s_server_and_the_message_has_the_numbers():
    # MemTotal of a 512 MiB lab VM (kernel reservations taken off).
    check = memory_check("server-1", "server", meminfo(492_000))
    assert check["ok"] is False
    assert (check["have_mib"], check["need_mib"]) == (480, 1613)
    assert check["message"].startswith("server-1 has 480 MiB of memory (MemTotal), but a k3s server with embedded etcd needs at least 1613 MiB")
    assert "docs.k3s.io/reference/resource-profiling" in check["message"]
    assert "docs.k3s.io/installation/requirements asks for 1907 MiB" in check["message"]


def test_a_2_gib_server_passes_and_a_1_gib_agent_too():
    assert memory_check("server-1", "server", meminfo(2_010_000)) == {
        "ok": True,
        "have_mib": 1962,
        "need_mib": 1613,
        "recommended_mib": 1907,
        "message": "",
        "warning": "",
    }
    assert memory_check("agent-1", "agent", meminfo(1_000_000))["ok"] is True


def test_an_agent_between_minimum_and_recommended_passes_with_a_warning():
    check = memory_check("jetson-1", "agent", meminfo(480_000))
    assert check["ok"] is True
    assert check["warning"] == "jetson-1 has 468 MiB of memory; docs.k3s.io/installation/requirements recommends 488 MiB for a k3s agent"


def test_agent_minimum_and_explicit_override():
    assert memory_check("agent-1", "agent", meminfo(270 * 1024))["ok"] is False
    assert memory_check("agent-1", "agent", meminfo(270 * 1024), minimum_mib=256)["ok"] is True


@pytest.mark.parametrize(("text", "role"), [("MemFree: 1 kB\n", "server"), (meminfo(10), "master")])
def test_unreadable_meminfo_or_role_is_an_error(text, role):
    with pytest.raises(NodeCheckError):
        memory_check("n", role, text)


# --- the installed version (`k3s --version`, as k3s-ansible's k3s_upgrade reads it)

VERSION_OUTPUT = "k3s version v1.35.0+k3s3 (f061615c)\ngo version go1.24.9\n"


def test_version_is_the_third_word_of_the_first_line():
    assert installed_version(VERSION_OUTPUT) == "v1.35.0+k3s3"
    assert installed_version("k3s version v1.34.2-rc1+k3s1 (abc)\n") == "v1.34.2-rc1+k3s1"
    assert installed_version("") is None
    assert installed_version("sh: 1: k3s: not found") is None


def test_version_problem_names_both():
    assert version_problem("server-1", VERSION_OUTPUT, "v1.35.0+k3s3") == ""
    assert version_problem("server-1", VERSION_OUTPUT, "v1.35.1+k3s1") == "server-1: k3s --version reports v1.35.0+k3s3, but k3s_version is v1.35.1+k3s1"
    assert version_problem("agent-1", "Segmentation fault\n", "v1.35.0+k3s3") == (
        "agent-1: k3s --version reports 'Segmentation fault', but k3s_version is v1.35.0+k3s3"
    )


# --- Ready waits


@pytest.mark.parametrize(
    ("accel", "seconds", "why"),
    [
        ("", 300, "300 s"),
        (None, 300, "300 s"),
        ("kvm", 300, "KVM lab VM: 300 s"),
        ("tcg", 1200, "TCG lab VM: 4 x 300 s"),
        ("TCG", 1200, "TCG lab VM: 4 x 300 s"),
    ],
)
def test_ready_wait_scales_with_the_accelerator(accel, seconds, why):
    assert ready_timeout(300, accel) == {"seconds": seconds, "why": why}


# --- tokens (pkg/clientaccess/token.go, docs.k3s.io cli/token)

SERVER_TOKEN_FILE = f"K10{CA}::server:s3cretpassword\n"


@pytest.mark.parametrize(
    ("token", "parsed"),
    [
        ("s3cretpassword", ("", "", "s3cretpassword")),
        ("with:colon", ("", "", "with:colon")),
        (f"K10{CA}::server:s3cretpassword", (CA, "server", "s3cretpassword")),
        (f"K10{CA}::node:agentpass", (CA, "node", "agentpass")),
        ("abcdef.0123456789abcdef", ("", "", "abcdef.0123456789abcdef")),
    ],
)
def test_tokens_parse_as_k3s_parses_them(token, parsed):
    assert parse_token(token) == parsed


@pytest.mark.parametrize("token", ["", "K10abc::server:x", f"K10{CA}::nocolon", f"K10{CA}::server:"])
def test_malformed_tokens_are_refused(token):
    with pytest.raises(NodeCheckError):
        parse_token(token)


def test_token_matches_the_bootstrapped_one():
    assert token_matches("s3cretpassword", SERVER_TOKEN_FILE)
    assert token_matches(f"K10{CA}::server:s3cretpassword", SERVER_TOKEN_FILE)
    assert not token_matches("another", SERVER_TOKEN_FILE)
    assert not token_matches(f"K10{'b' * 64}::server:s3cretpassword", SERVER_TOKEN_FILE), "another cluster's CA"
    assert not token_matches("", SERVER_TOKEN_FILE)
    assert not token_matches("s3cretpassword", "garbage")


# --- the unit's environment file (install.sh create_env_file, docs.k3s.io advanced)


def test_no_proxy_env_file_is_its_header_only(vlans):
    assert env_file(vlans, "agent-1", "agent") == "# Generated by n3x.cluster for the k3s agent of agent-1; changes here are overwritten.\n"


def test_proxy_env_file_has_the_node_networks_and_cidrs_in_no_proxy(vlans):
    proxy = "http://proxy.example:3128"
    text = env_file(vlans, "server-2", "server", http_proxy=proxy, https_proxy=proxy, no_proxy_extra=["registry.lan"])
    assert text.splitlines()[1:] == [
        "HTTP_PROXY=http://proxy.example:3128",
        "HTTPS_PROXY=http://proxy.example:3128",
        "NO_PROXY=127.0.0.0/8,localhost,.svc,.cluster.local,192.168.200.0/24,192.168.100.0/24,192.168.200.1,10.42.0.0/16,10.43.0.0/16,registry.lan",
    ]


def test_containerd_only_proxy(vlans):
    lines = env_file(vlans, "agent-1", "agent", https_proxy="http://p:1", containerd_proxy=True).splitlines()[1:]
    assert lines == [
        "CONTAINERD_HTTPS_PROXY=http://p:1",
        "CONTAINERD_NO_PROXY=127.0.0.0/8,localhost,.svc,.cluster.local,192.168.200.0/24,192.168.100.0/24,192.168.200.1,10.42.0.0/16,10.43.0.0/16",
    ]


def test_no_proxy_of_a_vip_profile_names_the_vip(vlans):
    vip = dict(vlans, server_api="https://192.168.200.100:6443")
    assert "192.168.200.100" in no_proxy(vip, "agent-1")


@pytest.mark.parametrize(("field", "value"), [("http_proxy", "http://a b"), ("https_proxy", "http://x\nEVIL=1"), ("https_proxy", "$(reboot)")])
def test_env_values_that_would_break_the_file_are_refused(vlans, field, value):
    with pytest.raises(NodeCheckError, match=f"k3s_{field}: "):
        env_file(vlans, "agent-1", "agent", **{field: value})
    with pytest.raises(NodeCheckError, match="k3s_no_proxy: "):
        env_file(vlans, "agent-1", "agent", http_proxy="http://p:1", no_proxy_extra=["a,b"])
