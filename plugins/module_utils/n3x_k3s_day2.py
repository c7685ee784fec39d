# Copyright: n3x developers
# MIT License
"""Day-2 decisions on a running k3s cluster: upgrade order and stop rules, what blocks a
drain, whether an etcd member can leave, and what a reset covers. Pure Python, no Ansible.

Sources: docs.k3s.io upgrades/manual ("upgrade server nodes first one at a time, then any
agent nodes"; the Kubernetes version skew policy: never skip a minor), k3s-io/k3s-ansible
roles/k3s_upgrade (only a node older than the wanted version changes), k3s-io/k3s
pkg/etcd/member_controller.go (deleting a server's Node object removes its etcd member,
through a finalizer, on a server that stays) and etcd's quorum rule (floor(n/2) + 1).
"""

from __future__ import annotations

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s_node import installed_version, parse_release


class Day2Error(Exception):
    """The operation is refused; the message says why and what to do instead."""


def quorum(members):
    """Members an etcd cluster of this size needs to agree."""
    return members // 2 + 1


def node_states(items):
    """{name: {"ready": bool, "kubelet": version}} from `kubectl get nodes --output=json` items."""
    states = {}
    for item in items or []:
        status = item.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        states[(item.get("metadata") or {}).get("name")] = {"ready": ready, "kubelet": (status.get("nodeInfo") or {}).get("kubeletVersion")}
    return states


def upgrade_nodes(items, version_outputs):
    """upgrade_plan's nodes: each node's `k3s --version` output with its Ready state."""
    states = node_states(items)
    return {
        name: {"version": installed_version(output or ""), "ready": states.get(name, {}).get("ready", False)}
        for name, output in (version_outputs or {}).items()
    }


def upgrade_plan(target, nodes, servers, agents):
    """{upgrade: [names in order], current: [names already at target]} or Day2Error.

    nodes: {name: {"version": installed release or None, "ready": bool}}. Servers come first,
    one at a time in inventory order, then agents. Refused, before anything changes: a
    target that is no release tag, a node without k3s, a node that is not Ready (upgrading
    beside a broken node risks etcd quorum), a downgrade, and a skipped minor.
    """
    wanted = parse_release(target)
    if wanted is None:
        raise Day2Error(f"k3s_version {target!r} is not a k3s release tag like v1.35.0+k3s3")
    problems, upgrade, current = [], [], []
    for name in [*servers, *[a for a in agents if a not in servers]]:
        if name not in nodes:
            continue
        info = nodes[name] or {}
        version = info.get("version")
        have = parse_release(version) if version else None
        if have is None:
            problems.append(f"{name}: runs no k3s release ({version or 'k3s --version failed'}); add it with playbooks/cluster.yml first")
            continue
        if not info.get("ready"):
            problems.append(f"{name}: is not Ready; fix it (or remove it with playbooks/reset.yml) before an upgrade")
        if have == wanted:
            current.append(name)
        elif have > wanted:
            problems.append(f"{name}: runs {version}, newer than {target}; a downgrade is a snapshot restore (docs.k3s.io/upgrades/roll-back), not an upgrade")
        elif wanted[0] != have[0]:
            problems.append(f"{name}: runs {version}; {target} is another major release")
        elif wanted[1] > have[1] + 1:
            problems.append(
                f"{name}: runs {version}; {target} skips minor {have[0]}.{have[1] + 1} (Kubernetes version skew policy): "
                f"upgrade to a v{have[0]}.{have[1] + 1} release first"
            )
        else:
            upgrade.append(name)
    if problems:
        raise Day2Error("upgrade refused, nothing changed:\n" + "\n".join(problems))
    return {"upgrade": upgrade, "current": current}


def drain_blockers(pods, node):
    """What still runs on a node a drain would evict: ["namespace/name (phase, owner)"].

    pods: the items of `kubectl get pods --all-namespaces --field-selector spec.nodeName=NODE`.
    DaemonSet pods (kubectl drain --ignore-daemonsets leaves them), mirror pods of static
    manifests and finished pods do not block a drain.
    """
    blockers = []
    for pod in pods or []:
        meta = pod.get("metadata", {})
        if pod.get("spec", {}).get("nodeName") not in (None, node):
            continue
        owners = meta.get("ownerReferences") or []
        if any(owner.get("kind") == "DaemonSet" for owner in owners):
            continue
        if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
            continue
        phase = pod.get("status", {}).get("phase", "Unknown")
        if phase in ("Succeeded", "Failed"):
            continue
        owner = ", ".join(f"{o.get('kind')}/{o.get('name')}" for o in owners) or "no controller"
        blockers.append(f"{meta.get('namespace', 'default')}/{meta.get('name', '?')} ({phase}, {owner})")
    return blockers


def reset_scope(resetting, servers, agents):
    """{whole_cluster, servers, agents, staying_servers} for resetting these nodes."""
    resetting = [n for n in resetting if n in servers or n in agents]
    staying = [s for s in servers if s not in resetting]
    return {
        "whole_cluster": not staying,
        "servers": [s for s in servers if s in resetting],
        "agents": [a for a in agents if a in resetting and a not in servers],
        "staying_servers": staying,
    }


def init_server_refusal(scope, init_server, server_api):
    """'' unless a partial reset takes the init server (server_api's host) while servers stay.

    The role configures server_api's host with cluster-init and every other node with
    server: server_api (n3x_k3s.k3s_config), so that server, reset and added again by
    cluster.yml, would start a second cluster beside the running one.
    """
    if scope["whole_cluster"] or not init_server or init_server not in scope["servers"]:
        return ""
    return (
        f"{init_server} is the host of server_api {server_api}, the server the cluster was initialised on: "
        f"added again, it would start a new cluster (cluster-init) beside this one, and the other nodes join "
        f"through its address. Point server_api at a server that stays (or a virtual IP) in the profile, apply "
        f"it with playbooks/cluster.yml, then reset {init_server}"
    )


def member_removal(members, ready, leaving):
    """'' when these etcd members can leave one at a time, else why not (quorum explained).

    members: the etcd members (servers) now; ready: those Ready now; leaving: those to remove.
    A removal is a membership change the current cluster must commit (quorum of its size,
    the leaving member counted while it runs), and the smaller cluster must keep its own
    quorum of Ready members afterwards.
    """
    members = list(dict.fromkeys(members))
    ready = [m for m in members if m in ready]
    unknown = [m for m in leaving if m not in members]
    if unknown:
        return f"{', '.join(unknown)}: not etcd members of this cluster ({', '.join(members) or 'none'})"
    remaining = list(members)
    remaining_ready = list(ready)
    for member in leaving:
        size = len(remaining)
        if size <= 1:
            return f"{member} is the last etcd member: that is a whole-cluster reset"
        if len(remaining_ready) < quorum(size):
            return (
                f"removing {member} needs {quorum(size)} of {size} etcd members Ready to commit the change, "
                f"but only {len(remaining_ready)} are ({', '.join(remaining_ready) or 'none'}); bring the others back first"
            )
        remaining.remove(member)
        if member in remaining_ready:
            remaining_ready.remove(member)
        if len(remaining_ready) < quorum(len(remaining)):
            return (
                f"without {member}, {len(remaining)} etcd members remain and need {quorum(len(remaining))} Ready, "
                f"but only {len(remaining_ready)} are ({', '.join(remaining_ready) or 'none'}): the API would stop"
            )
    return ""


def local_volumes(pvs, nodes):
    """{node: [PV names]} of the local-path volumes bound to each node (data that goes with it).

    local-path-provisioner pins each volume to its node with a required node affinity on
    kubernetes.io/hostname; resetting the node deletes the directory under
    /var/lib/rancher/k3s/storage that holds it.
    """
    found = {node: [] for node in nodes}
    for pv in pvs or []:
        spec = pv.get("spec") or {}
        if spec.get("storageClassName") != "local-path":
            continue
        terms = (((spec.get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms")) or []
        pinned = {value for term in terms for expression in term.get("matchExpressions") or [] for value in expression.get("values") or []}
        for node in nodes:
            if node in pinned:
                found[node].append((pv.get("metadata") or {}).get("name", "?"))
    return {node: names for node, names in found.items() if names}
