"""Day 2 on the running cluster, as users run it: playbooks/upgrade.yml, reset.yml and
cluster.yml from the controller against the scenario's inventory. Each test runs once (for
the init server's host); k3s_fixtures orders them after every other test of the scenario,
the upgrade to another release last. A scenario's test module star-imports this one.
"""

import os
import re

import pytest

UPGRADE_NEEDS = (
    "needs a second k3s release: set N3X_K3S_UPGRADE_VERSION and N3X_K3S_UPGRADE_BINARY (with N3X_K3S_UPGRADE_SHA256 "
    "or a sha256sum-amd64.txt beside it) or N3X_K3S_UPGRADE_AIRGAP_DIR"
)


@pytest.fixture
def once(node, init_server):
    if node != init_server:
        pytest.skip("a cluster-wide operation: runs once, for the init server")


def output(result):
    return " ".join((result.stdout + result.stderr).split())


def recap(result):
    return dict(re.findall(r"^(\S+)\s+: (ok=.*)$", result.stdout, re.MULTILINE))


def ready_nodes(kubectl):
    return {
        n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"]
        for n in kubectl("get", "nodes")["items"]
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    }


def etcd_members(kubectl):
    return sorted(n["metadata"]["name"] for n in kubectl("get", "nodes")["items"] if n["metadata"]["labels"].get("node-role.kubernetes.io/etcd") == "true")


def drop_layer_test_namespaces(kubectl):
    """The layer tests' bare pods (no controller) would block a drain, and their local-path
    volume would make a reset of its node ask for confirmation: both are tested on purpose
    below, not by accident."""
    kubectl("delete", "namespace", "n3x-network-test", "n3x-storage-test", "--ignore-not-found", "--wait=true", raw=True)


def no_k3s_left(node_host):
    for path in (
        "/usr/local/bin/k3s",
        "/etc/rancher/k3s",
        "/var/lib/rancher/k3s",
        "/var/lib/kubelet",
        "/usr/local/bin/k3s-killall.sh",
        "/etc/systemd/system/k3s.service",
        "/etc/systemd/system/k3s-agent.service",
        "/etc/systemd/system/k3s-agent.service.env",
    ):
        assert not node_host.file(path).exists, path
    assert node_host.run("pgrep -f 'k3s (server|agent)'").rc == 1


def test_day2_upgrade_to_the_running_version_changes_nothing(once, ansible_playbook, k3s_defaults):
    result = ansible_playbook("upgrade.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"nothing to upgrade: every node runs {k3s_defaults['k3s_version']}" in output(result)
    for name, stats in recap(result).items():
        assert "changed=0" in stats, (name, stats)
        assert "failed=0" in stats, (name, stats)


def test_day2_whole_cluster_reset_needs_the_cluster_name(once, ansible_playbook, kubectl, profile, lab_nodes):
    before = ready_nodes(kubectl)
    result = ansible_playbook("reset.yml")
    assert result.returncode != 0
    assert f"Nothing changed. To go ahead, add -e k3s_reset_confirm={profile['server_api']}" in output(result)
    assert ready_nodes(kubectl) == before


def test_day2_a_drain_blocked_by_a_bare_pod_is_reported_and_undone(once, ansible_playbook, kubectl, kubectl_apply, agents, test_image):
    if not agents:
        pytest.skip("the scenario has no agent")
    agent = agents[-1]
    drop_layer_test_namespaces(kubectl)
    kubectl_apply(
        f"""apiVersion: v1
kind: Pod
metadata: {{name: n3x-bare, namespace: default}}
spec:
  nodeName: {agent}
  containers: [{{name: sleep, image: {test_image}, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}}]"""
    )
    kubectl("wait", "pod/n3x-bare", "--for=condition=Ready", "--timeout=300s", raw=True)
    result = ansible_playbook("reset.yml", "--limit", agent)
    assert result.returncode != 0
    assert f"{agent} did not drain within" in output(result)
    assert "default/n3x-bare (Running, no controller)" in output(result)
    assert agent in ready_nodes(kubectl)
    assert not kubectl("get", "node", agent)["spec"].get("unschedulable"), "the node must be uncordoned again"
    kubectl("delete", "pod", "n3x-bare", "--wait=true", raw=True)


def test_day2_remove_and_add_an_agent(once, ansible_playbook, kubectl, agents, host_of, k3s_defaults):
    if not agents:
        pytest.skip("the scenario has no agent")
    agent = agents[-1]
    drop_layer_test_namespaces(kubectl)
    removed = ansible_playbook("reset.yml", "--limit", agent)
    assert removed.returncode == 0, removed.stdout[-3000:]
    assert agent not in ready_nodes(kubectl)
    assert agent not in [n["metadata"]["name"] for n in kubectl("get", "nodes")["items"]]
    no_k3s_left(host_of(agent))
    added = ansible_playbook("cluster.yml", "--limit", agent)
    assert added.returncode == 0, added.stdout[-3000:]
    assert ready_nodes(kubectl)[agent] == k3s_defaults["k3s_version"]


def test_day2_remove_and_add_a_joining_server(once, ansible_playbook, kubectl, servers, init_server, host_of, k3s_defaults):
    joining = [s for s in servers if s != init_server]
    if not joining:
        pytest.skip("a single server: removing it is a whole-cluster reset, refused above without k3s_reset_confirm")
    server = joining[-1]
    removed = ansible_playbook("reset.yml", "--limit", server)
    assert removed.returncode == 0, removed.stdout[-3000:]
    assert etcd_members(kubectl) == sorted(s for s in servers if s != server)
    assert "[+]etcd ok" in kubectl("get", "--raw", "'/readyz?verbose'", raw=True)
    no_k3s_left(host_of(server))
    added = ansible_playbook("cluster.yml", "--limit", server)
    assert added.returncode == 0, added.stdout[-3000:]
    assert ready_nodes(kubectl)[server] == k3s_defaults["k3s_version"]
    assert etcd_members(kubectl) == sorted(servers)


def test_day2_upgrade_to_another_release(once, ansible_playbook, kubectl, lab_nodes, host_of, init_server):
    target = os.environ.get("N3X_K3S_UPGRADE_VERSION")
    binary, airgap = os.environ.get("N3X_K3S_UPGRADE_BINARY", ""), os.environ.get("N3X_K3S_UPGRADE_AIRGAP_DIR", "")
    if not target or not (binary or airgap):
        pytest.skip(UPGRADE_NEEDS)
    source = {"k3s_version": target, "k3s_binary_path": binary, "k3s_binary_checksum": os.environ.get("N3X_K3S_UPGRADE_SHA256", ""), "k3s_airgap_dir": airgap}
    result = ansible_playbook("upgrade.yml", extra=source)
    assert result.returncode == 0, result.stdout[-3000:]
    assert ready_nodes(kubectl) == dict.fromkeys(lab_nodes, target)
    for item in kubectl("get", "nodes")["items"]:
        assert not item["spec"].get("unschedulable"), item["metadata"]["name"]
    snapshots = host_of(init_server).run("k3s etcd-snapshot list")
    assert f"n3x-pre-upgrade-{target.replace('+', '-')}" in snapshots.stdout, snapshots.stdout
    again = ansible_playbook("upgrade.yml", extra=source)
    assert again.returncode == 0
    assert f"nothing to upgrade: every node runs {target}" in output(again)
