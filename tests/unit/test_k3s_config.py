"""k3s config.yaml per node: keys per role, init server, flag-table checks, quorum warnings."""

import json
import pathlib

import pytest
import yaml

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_k3s_flags
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s import (
    SECRET_FLAGS,
    SECRET_KEYS,
    check_k3s_config,
    flag_table,
    init_server,
    k3s_config,
    k3s_config_yaml,
    quorum_warnings,
    secret_flags_in,
    version_minor,
)
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import ProfileError, load_profile

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
        "agent-token-file": "/etc/rancher/k3s/agent-token",
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
        "token-file": "/etc/rancher/k3s/agent-token",
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
    # The upstream reference (copied into the repository, reference/README.md) is the oracle.
    reference = json.loads((REPO / REFERENCE).read_text())
    assert reference["k3s_version"] == n3x_k3s_flags.K3S_VERSION
    assert {flag["name"]: (flag["type"], tuple(sorted(flag["commands"], reverse=True))) for flag in reference["flags"]} == n3x_k3s_flags.FLAGS
    server = [n for n, (_t, c) in n3x_k3s_flags.FLAGS.items() if "server" in c]
    agent = [n for n, (_t, c) in n3x_k3s_flags.FLAGS.items() if "agent" in c]
    assert (len(server), len(agent)) == (124, 46)


# --- scoped tokens (docs.k3s.io/cli/token)


def test_servers_name_both_tokens_and_agents_only_their_own(vlans):
    for node in ("server-1", "server-2"):
        config = k3s_config(vlans, node, "server", servers=SERVERS)
        assert (config["token-file"], config["agent-token-file"]) == ("/etc/rancher/k3s/token", "/etc/rancher/k3s/agent-token")
    agent = k3s_config(vlans, "agent-1", "agent", servers=SERVERS, token_file="/srv/server-token")  # noqa: S106 - a path
    assert agent["token-file"] == "/etc/rancher/k3s/agent-token"
    assert "agent-token-file" not in agent
    assert "/srv/server-token" not in agent.values()


# --- flag tables by minor release


def test_flag_table_by_minor():
    assert flag_table("v1.35.2+k3s1") is n3x_k3s_flags
    assert version_minor("v1.35.0+k3s3") == "1.35"
    with pytest.raises(ProfileError) as caught:
        flag_table("v1.34.2+k3s1")
    assert str(caught.value) == (
        "k3s_version: 'v1.34.2+k3s1' is minor 1.34, and n3x has flag tables for v1.35 (v1.35.0+k3s3) only; regenerate one "
        "with scripts/gen-k3s-flag-table, or set k3s_allow_other_minor=true to check config.yaml against the newest table anyway"
    )
    assert flag_table("v1.34.2+k3s1", allow_other_minor=True) is n3x_k3s_flags


def test_config_refuses_a_minor_without_a_table(vlans):
    with pytest.raises(ProfileError, match=r"is minor 1\.36"):
        k3s_config(vlans, "server-1", "server", version="v1.36.0+k3s1")
    assert k3s_config(vlans, "server-1", "server", version="v1.36.0+k3s1", allow_other_minor=True)["node-name"] == "server-1"


# --- secret-bearing flags


def test_secret_flags_are_flags_of_the_table():
    assert set(SECRET_FLAGS) <= set(n3x_k3s_flags.FLAGS)
    assert set(SECRET_KEYS) <= set(SECRET_FLAGS)
    for file_key in SECRET_KEYS.values():
        assert file_key in n3x_k3s_flags.FLAGS


@pytest.mark.parametrize("key", ["datastore-endpoint", "etcd-s3-secret-key", "etcd-s3-session-token", "etcd-s3-access-key", "etcd-s3-proxy"])
def test_secret_flags_only_from_the_secret_mapping(vlans, key):
    with pytest.raises(ProfileError, match=f"{key}: carries a secret; give it in k3s_secret_config"):
        k3s_config(vlans, "server-1", "server", extra={key: "value"})
    config = k3s_config(vlans, "server-1", "server", secret={key: "s3cret"})
    assert config[key] == "s3cret"
    assert secret_flags_in(config) == [key]


def test_vpn_auth_goes_in_a_file(vlans):
    with pytest.raises(ProfileError, match="vpn-auth: is a secret; put it in a 0600 file and set vpn-auth-file"):
        k3s_config(vlans, "agent-1", "agent", extra={"vpn-auth": "name=tailscale,joinKey=x"})


def test_secret_mapping_takes_secret_flags_only_and_never_echoes_values(vlans):
    with pytest.raises(ProfileError) as caught:
        k3s_config(vlans, "server-1", "server", secret={"debug": True, "token": "tok-value", "etcd-s3-secret-key": 5})
    text = str(caught.value)
    assert "secret.debug: is not a secret-bearing flag" in text
    assert "secret.token: is not a secret-bearing flag" in text
    assert "secret.etcd-s3-secret-key: must be a string" in text
    assert "tok-value" not in text
    with pytest.raises(ProfileError, match="datastore-endpoint: is a k3s server flag only"):
        k3s_config(vlans, "agent-1", "agent", secret={"datastore-endpoint": "postgres://u:p@db/k3s"})
