"""Day 2: upgrade order and stop rules, drain blockers, etcd member removal, reset scope, and
the exact mount matching of k3s-killall.sh (run for real on a mounts file)."""

import pathlib
import subprocess

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s_day2 import (
    Day2Error,
    drain_blockers,
    init_server_refusal,
    local_volumes,
    member_removal,
    node_states,
    quorum,
    reset_scope,
    upgrade_nodes,
    upgrade_plan,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
KILLALL = REPO / "roles/k3s/files/k3s-killall.sh"
SERVERS = ["server-1", "server-2", "server-3"]
AGENTS = ["agent-1", "agent-2"]


def nodes(version="v1.35.0+k3s3", ready=True, **overrides):
    found = {name: {"version": version, "ready": ready} for name in [*SERVERS, *AGENTS]}
    found.update(overrides)
    return found


def node_object(name, ready="True", kubelet="v1.35.0+k3s3"):
    conditions = [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}]
    return {"metadata": {"name": name}, "status": {"conditions": conditions, "nodeInfo": {"kubeletVersion": kubelet}}}


# --- upgrade (docs.k3s.io upgrades/manual; k3s-ansible k3s_upgrade)


def test_servers_one_at_a_time_then_agents_in_inventory_order():
    plan = upgrade_plan("v1.35.1+k3s1", nodes(), SERVERS, AGENTS)
    assert plan == {"upgrade": [*SERVERS, *AGENTS], "current": []}


def test_nothing_changes_when_every_node_runs_the_version():
    assert upgrade_plan("v1.35.0+k3s3", nodes(), SERVERS, AGENTS) == {"upgrade": [], "current": [*SERVERS, *AGENTS]}


def test_a_half_done_upgrade_resumes_with_the_rest():
    plan = upgrade_plan("v1.35.1+k3s1", nodes(**{"server-1": {"version": "v1.35.1+k3s1", "ready": True}}), SERVERS, AGENTS)
    assert plan["upgrade"] == ["server-2", "server-3", *AGENTS]
    assert plan["current"] == ["server-1"]


def test_next_minor_is_fine_and_a_release_candidate_is_older_than_its_release():
    assert upgrade_plan("v1.36.0+k3s1", nodes(), SERVERS, AGENTS)["upgrade"] == [*SERVERS, *AGENTS]
    assert upgrade_plan("v1.35.1+k3s1", nodes(version="v1.35.1-rc1+k3s1"), SERVERS, AGENTS)["upgrade"] == [*SERVERS, *AGENTS]


@pytest.mark.parametrize(
    ("target", "state", "reason"),
    [
        ("v1.34.9+k3s1", {}, "agent-1: runs v1.35.0+k3s3, newer than v1.34.9+k3s1; a downgrade is a snapshot restore"),
        ("v1.37.0+k3s1", {}, "server-1: runs v1.35.0+k3s3; v1.37.0+k3s1 skips minor 1.36 (Kubernetes version skew policy): upgrade to a v1.36 release first"),
        ("v2.35.0+k3s1", {}, "server-1: runs v1.35.0+k3s3; v2.35.0+k3s1 is another major release"),
        ("v1.35.1+k3s1", {"server-2": {"version": "v1.35.0+k3s3", "ready": False}}, "server-2: is not Ready; fix it"),
        (
            "v1.35.1+k3s1",
            {"agent-2": {"version": None, "ready": False}},
            "agent-2: runs no k3s release (k3s --version failed); add it with playbooks/cluster.yml first",
        ),
    ],
)
def test_refusals_name_every_node_and_change_nothing(target, state, reason):
    with pytest.raises(Day2Error) as caught:
        upgrade_plan(target, nodes(**state), SERVERS, AGENTS)
    assert str(caught.value).startswith("upgrade refused, nothing changed:\n")
    assert reason in str(caught.value)


def test_every_refusal_is_listed_at_once():
    with pytest.raises(Day2Error) as caught:
        upgrade_plan("v1.37.0+k3s1", nodes(), SERVERS, AGENTS)
    assert len(str(caught.value).splitlines()) == 1 + len(SERVERS) + len(AGENTS)


def test_target_must_be_a_release_tag():
    with pytest.raises(Day2Error, match="is not a k3s release tag"):
        upgrade_plan("latest", nodes(), SERVERS, AGENTS)


def test_nodes_from_kubectl_and_k3s_version():
    items = [node_object("server-1"), node_object("agent-1", ready="Unknown")]
    assert node_states(items) == {"server-1": {"ready": True, "kubelet": "v1.35.0+k3s3"}, "agent-1": {"ready": False, "kubelet": "v1.35.0+k3s3"}}
    outputs = {"server-1": "k3s version v1.35.0+k3s3 (f061615c)\ngo version go1.24\n", "agent-1": "", "agent-9": "k3s version v1.35.0+k3s3 (x)"}
    assert upgrade_nodes(items, outputs) == {
        "server-1": {"version": "v1.35.0+k3s3", "ready": True},
        "agent-1": {"version": None, "ready": False},
        "agent-9": {"version": "v1.35.0+k3s3", "ready": False},
    }


# --- drain blockers


def pod(name, namespace="default", owner=None, phase="Running", node="agent-1", mirror=False):
    meta = {"name": name, "namespace": namespace}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1]}]
    if mirror:
        meta["annotations"] = {"kubernetes.io/config.mirror": "x"}
    return {"metadata": meta, "spec": {"nodeName": node}, "status": {"phase": phase}}


def test_drain_blockers_are_the_pods_a_drain_must_still_evict():
    pods = [
        pod("svclb-x", "kube-system", ("DaemonSet", "svclb")),
        pod("web-1", "shop", ("ReplicaSet", "web-5d8")),
        pod("lonely"),
        pod("done", owner=("Job", "j"), phase="Succeeded"),
        pod("static", "kube-system", mirror=True),
        pod("elsewhere", node="agent-2"),
    ]
    assert drain_blockers(pods, "agent-1") == ["shop/web-1 (Running, ReplicaSet/web-5d8)", "default/lonely (Running, no controller)"]
    assert drain_blockers([], "agent-1") == []


# --- reset scope and etcd member removal (pkg/etcd/member_controller.go; quorum floor(n/2)+1)


def test_quorum():
    assert [quorum(n) for n in range(1, 6)] == [1, 2, 2, 3, 3]


def test_reset_scope():
    assert reset_scope(["agent-1"], SERVERS, AGENTS) == {"whole_cluster": False, "servers": [], "agents": ["agent-1"], "staying_servers": SERVERS}
    assert reset_scope(["server-2", "agent-2", "lab-dhcp"], SERVERS, AGENTS)["servers"] == ["server-2"]
    assert reset_scope([*SERVERS, *AGENTS], SERVERS, AGENTS)["whole_cluster"] is True
    assert reset_scope(SERVERS, SERVERS, AGENTS)["whole_cluster"] is True


def test_one_of_three_healthy_servers_can_leave():
    assert member_removal(SERVERS, SERVERS, ["server-3"]) == ""


def test_one_of_two_can_leave_while_both_run():
    assert member_removal(["server-1", "server-2"], ["server-1", "server-2"], ["server-2"]) == ""


def test_removal_needs_the_current_quorum():
    reason = member_removal(["server-1", "server-2"], ["server-1"], ["server-2"])
    assert reason == "removing server-2 needs 2 of 2 etcd members Ready to commit the change, but only 1 are (server-1); bring the others back first"


def test_the_rest_must_keep_quorum():
    # 3 members, server-3 down: removing server-1 leaves server-2 and the dead server-3.
    reason = member_removal(SERVERS, ["server-1", "server-2"], ["server-1"])
    assert reason == "without server-1, 2 etcd members remain and need 2 Ready, but only 1 are (server-2): the API would stop"


def test_the_init_server_cannot_leave_while_servers_stay():
    """server_api's host gets cluster-init: added back by cluster.yml it would start a new cluster."""
    api = "https://192.168.1.1:6443"
    refusal = init_server_refusal(reset_scope(["server-1"], SERVERS, AGENTS), "server-1", api)
    assert refusal.startswith(f"server-1 is the host of server_api {api}, the server the cluster was initialised on")
    assert refusal.endswith("in the profile, apply it with playbooks/cluster.yml, then reset server-1")
    assert init_server_refusal(reset_scope(["server-2", "agent-1"], SERVERS, AGENTS), "server-1", api) == ""
    assert init_server_refusal(reset_scope([*SERVERS, *AGENTS], SERVERS, AGENTS), "server-1", api) == "", "a whole-cluster reset is confirmed by name instead"
    assert init_server_refusal(reset_scope(["server-1"], SERVERS, AGENTS), "", api) == "", "server_api behind a VIP: no init server"


def test_removing_two_of_three_one_at_a_time():
    assert member_removal(SERVERS, SERVERS, ["server-2", "server-3"]) == ""


def test_unknown_members_and_the_last_one():
    assert member_removal(SERVERS, SERVERS, ["agent-1"]).startswith("agent-1: not etcd members")
    assert member_removal(["server-1"], ["server-1"], ["server-1"]) == "server-1 is the last etcd member: that is a whole-cluster reset"


# --- k3s-killall.sh: which mounts are k3s's (exact directories, never a sibling)

MOUNTS = """\
/dev/vda1 / ext4 rw 0 0
tmpfs /run tmpfs rw 0 0
shm /run/k3s/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/shm tmpfs rw 0 0
overlay /run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs overlay rw 0 0
tmpfs /run/k3s-other tmpfs rw 0 0
/dev/vdb1 /var/lib/rancher/k3s-backup ext4 rw 0 0
/dev/vdb2 /var/lib/rancher/k3s/storage ext4 rw 0 0
/dev/vde1 /var/lib/rancher/k3s/server ext4 rw 0 0
/dev/vde2 /var/lib/rancher/k3s/agent ext4 rw 0 0
tmpfs /var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~projected/kube-api-access-x tmpfs rw 0 0
tmpfs /var/lib/kubelet/pods-archive tmpfs rw 0 0
/dev/vdc /var/lib/kubelet/plugins/kubernetes.io/csi/driver/mount ext4 rw 0 0
/dev/vdf /var/lib/kubelet/device-plugins ext4 rw 0 0
nsfs /run/netns/cni-1f2e3d nsfs rw 0 0
nsfs /run/netns/mine nsfs rw 0 0
/dev/vdd /var/lib/longhorn ext4 rw 0 0
"""


def killall_lists(option, mounts_text, tmp_path, env=None):
    mounts = tmp_path / "mounts"
    mounts.write_text(mounts_text)
    result = subprocess.run(["sh", str(KILLALL), option, str(mounts)], capture_output=True, text=True, check=True, timeout=30, env=env)
    return result.stdout.splitlines()


def test_killall_unmounts_exactly_upstreams_directories_deepest_first(tmp_path):
    """install.sh create_killall: /run/k3s, /var/lib/kubelet/pods, /var/lib/kubelet/plugins and
    /run/netns/cni-*; nothing below the data directory (k3s-io/k3s#10403, issue #8527), whose
    server/ and agent/ may be filesystems of their own."""
    wanted = [
        "/run/k3s/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/shm",
        "/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs",
        "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~projected/kube-api-access-x",
        "/var/lib/kubelet/plugins/kubernetes.io/csi/driver/mount",
        "/run/netns/cni-1f2e3d",
    ]
    # Reverse byte order puts every child before its parent.
    assert killall_lists("--list-mounts", MOUNTS, tmp_path) == sorted(wanted, reverse=True)


def test_removal_is_blocked_by_any_mount_below_what_an_uninstall_deletes(tmp_path):
    """The uninstall removes /etc/rancher/k3s, /run/k3s, /run/flannel, the data directory and
    /var/lib/kubelet with rm -rf: a mount left below any of them (never a sibling) stops it."""
    wanted = [
        "/run/k3s/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/shm",
        "/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs",
        "/var/lib/rancher/k3s/storage",
        "/var/lib/rancher/k3s/server",
        "/var/lib/rancher/k3s/agent",
        "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~projected/kube-api-access-x",
        "/var/lib/kubelet/pods-archive",
        "/var/lib/kubelet/plugins/kubernetes.io/csi/driver/mount",
        "/var/lib/kubelet/device-plugins",
    ]
    assert killall_lists("--list-blocking-mounts", MOUNTS, tmp_path) == sorted(wanted, reverse=True)


def test_killall_honours_k3s_data_dir(tmp_path):
    mounts = "x /srv/k3s/agent/x tmpfs rw 0 0\nx /var/lib/rancher/k3s/y tmpfs rw 0 0\nx /srv/k3s2 tmpfs rw 0 0\n"
    env = {"PATH": "/usr/bin:/bin", "K3S_DATA_DIR": "/srv/k3s"}
    assert killall_lists("--list-mounts", mounts, tmp_path, env) == []
    assert killall_lists("--list-blocking-mounts", mounts, tmp_path, env) == ["/srv/k3s/agent/x"]


def pv(name, node, storage_class="local-path"):
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
    return {"metadata": {"name": name}, "spec": {"storageClassName": storage_class, "nodeAffinity": {"required": {"nodeSelectorTerms": [term]}}}}


def test_local_volumes_pinned_to_leaving_nodes():
    pvs = [pv("pvc-1", "agent-1"), pv("pvc-2", "agent-2"), pv("pvc-3", "agent-1"), pv("nfs", "agent-1", "nfs"), {"metadata": {"name": "x"}, "spec": {}}]
    assert local_volumes(pvs, ["agent-1", "server-2"]) == {"agent-1": ["pvc-1", "pvc-3"]}
    assert local_volumes([], ["agent-1"]) == {}
