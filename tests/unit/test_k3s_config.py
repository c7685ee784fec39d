"""k3s config.yaml per node: keys per role, init server, flag-table checks, quorum warnings."""

import json
import pathlib

import pytest
import yaml

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_k3s_flags
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s import (
    check_k3s_config,
    init_server,
    k3s_config,
    k3s_config_yaml,
    quorum_warnings,
)
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import ProfileError, load_profile

from ..shared_dir import shared_file

REPO = pathlib.Path(__file__).resolve().parents[2]
REFERENCE = "reference/k3s-flags-v1.35.json"
SERVERS = ["server-1", "server-2"]


@pytest.fixture(scope="module")
def vlans():
    return load_profile("vlans", str(REPO / "profiles"))[1]


def test_init_server(vlans):
    config = k3s_config(vlans, "server-1", "server", servers=SERVERS)
    assert config == {
        "node-name": "server-1",
        "node-ip": "192.168.200.1",
        "flannel-iface": "eth1.200",
        "token-file": "/etc/rancher/k3s/token",
        "advertise-address": "192.168.200.1",
        "tls-san": ["192.168.200.1"],
        "cluster-cidr": "10.42.0.0/16",
        "service-cidr": "10.43.0.0/16",
        "disable": ["traefik", "servicelb"],
        "write-kubeconfig-mode": "0600",
        "cluster-init": True,
    }


def test_joining_server(vlans):
    config = k3s_config(vlans, "server-2", "server", servers=SERVERS)
    assert config["server"] == "https://192.168.200.1:6443"
    assert "cluster-init" not in config
    assert config["tls-san"] == ["192.168.200.1", "192.168.200.2"]
    assert config["advertise-address"] == "192.168.200.2"


def test_agent_has_no_server_only_keys(vlans):
    config = k3s_config(vlans, "agent-1", "agent", servers=SERVERS)
    assert config == {
        "node-name": "agent-1",
        "node-ip": "192.168.200.3",
        "flannel-iface": "eth1.200",
        "token-file": "/etc/rancher/k3s/token",
        "server": "https://192.168.200.1:6443",
    }


def test_token_never_in_config(vlans):
    for node, role in (("server-1", "server"), ("server-2", "server"), ("agent-1", "agent")):
        assert "token" not in k3s_config(vlans, node, role, servers=SERVERS)
    with pytest.raises(ProfileError, match="token: is a secret; put it in a 0600 file and set token-file"):
        k3s_config(vlans, "agent-1", "agent", extra={"token": "s3cret"})


def test_per_node_vlan_names_flannel_iface():
    broken = load_profile("vlans-broken", str(REPO / "profiles"))[1]
    assert k3s_config(broken, "agent-1", "agent")["flannel-iface"] == "eth1.202"


def test_server_api_elsewhere_means_every_server_joins(vlans):
    vip = dict(vlans, server_api="https://192.168.200.100:6443")
    assert init_server(vip, SERVERS) is None
    assert k3s_config(vip, "server-1", "server", servers=SERVERS)["server"] == "https://192.168.200.100:6443"
    assert k3s_config(vip, "server-1", "server", servers=SERVERS)["tls-san"] == ["192.168.200.100", "192.168.200.1"]


def test_options(vlans):
    config = k3s_config(
        vlans,
        "server-1",
        "server",
        disable=[],
        write_kubeconfig_mode="0640",
        token_file="/run/t",  # noqa: S106 - a path
        extra={"node-label": ["gpu=nvidia"]},
    )
    assert "disable" not in config
    assert config["write-kubeconfig-mode"] == "0640"
    assert config["token-file"] == "/run/t"
    assert config["node-label"] == ["gpu=nvidia"]


@pytest.mark.parametrize(
    ("role", "extra", "message"),
    [
        ("agent", {"tls-san": ["x"]}, "tls-san: is a k3s server flag only; k3s agent does not take it"),
        ("agent", {"cluster-init": True}, "cluster-init: comes from the profile; change the profile instead"),
        ("server", {"disable-apiserver-lb": True}, "disable-apiserver-lb: is a k3s agent flag only; k3s server does not take it"),
        ("server", {"no-such-flag": 1}, "no-such-flag: is not a k3s v1.35.0+k3s3 flag"),
        ("server", {"kubelet-arg": 5}, "kubelet-arg: must be a string or a list of strings, got 5"),
        ("server", {"debug": "yes"}, "debug: must be true or false, got 'yes'"),
        ("server", {"v": "2"}, "v: must be a whole number, got '2'"),
        ("server", {"etcd-snapshot-schedule-cron": 5}, "etcd-snapshot-schedule-cron: must be a string, got 5"),
        ("server", {"s": "https://x:1"}, "s: is a short alias; config.yaml takes the long name 'server'"),
        ("server", {"node-ip": "10.0.0.1"}, "node-ip: comes from the profile; change the profile instead"),
    ],
)
def test_flag_table_checks(vlans, role, extra, message):
    node = "server-1" if role == "server" else "agent-1"
    with pytest.raises(ProfileError) as caught:
        k3s_config(vlans, node, role, servers=SERVERS, extra=extra)
    assert f"k3s config of {node}: {message}" in str(caught.value).splitlines()


def test_durations_checked():
    check_k3s_config({"etcd-snapshot-retention": 5}, "server")
    duration_flags = [name for name, (kind, _c) in n3x_k3s_flags.FLAGS.items() if kind == "duration"]
    assert duration_flags
    check_k3s_config({duration_flags[0]: "1m30s"}, n3x_k3s_flags.FLAGS[duration_flags[0]][1][0])
    with pytest.raises(ProfileError, match="must be a duration"):
        check_k3s_config({duration_flags[0]: "90 seconds"}, n3x_k3s_flags.FLAGS[duration_flags[0]][1][0])


def test_unknown_role(vlans):
    with pytest.raises(ProfileError, match="k3s role 'master' is not one of: server, agent"):
        k3s_config(vlans, "server-1", "master")


def test_unknown_node(vlans):
    with pytest.raises(ProfileError, match="node 'server-9' is not in ip_addresses"):
        k3s_config(vlans, "server-9", "server")


def test_yaml_is_flat_and_round_trips(vlans):
    config = k3s_config(vlans, "server-1", "server", servers=SERVERS)
    text = k3s_config_yaml(config, "server-1")
    assert text.startswith("# Generated by n3x.cluster for server-1")
    assert yaml.safe_load(text) == config
    assert 'write-kubeconfig-mode: "0600"' in text
    assert 'tls-san:\n  - "192.168.200.1"\n' in text


def test_quorum_warnings():
    assert quorum_warnings(["a"]) == []
    assert quorum_warnings(["a", "b", "c"]) == []
    (warning,) = quorum_warnings(["a", "b"])
    assert "quorum is 2 of 2" in warning
    assert "losing either server stops the API" in warning
    (warning,) = quorum_warnings(["a", "b", "c", "d"])
    assert "quorum is 3 of 4" in warning
    assert "loss of 1 server" in warning


def test_flag_table_matches_reference():
    # The upstream reference is the oracle: missing, the test fails (tests/shared_dir.py).
    reference = json.loads(shared_file(REFERENCE).read_text())
    assert reference["k3s_version"] == n3x_k3s_flags.K3S_VERSION
    assert {flag["name"]: (flag["type"], tuple(sorted(flag["commands"], reverse=True))) for flag in reference["flags"]} == n3x_k3s_flags.FLAGS
    server = [n for n, (_t, c) in n3x_k3s_flags.FLAGS.items() if "server" in c]
    agent = [n for n, (_t, c) in n3x_k3s_flags.FLAGS.items() if "agent" in c]
    assert (len(server), len(agent)) == (124, 46)
