# Copyright: n3x developers
# MIT License
"""What one k3s node needs, checked before and after the install: pure Python, no Ansible.

Each rule names its upstream source (the k3s role README lists them all):
memory (docs.k3s.io reference/resource-profiling, installation/requirements), the
`k3s --version` line (k3s-io/k3s-ansible roles/k3s_upgrade), the token format
(k3s-io/k3s pkg/clientaccess/token.go, docs.k3s.io cli/token) and the unit's environment
file with proxy settings (install.sh create_env_file, docs.k3s.io advanced "Configuring an
HTTP proxy").
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import network_roles, server_api_host

# docs.k3s.io/reference/resource-profiling, "Min RAM with Embedded etcd": a server with a
# workload 1606 M (Intel 8375C) and 1613 M (Pi 4B); an agent 275 M and 268 M. n3x servers
# always run embedded etcd. The larger figure of each pair, read as MiB (the stricter way).
MEMORY_MINIMUM_MIB = {"server": 1613, "agent": 275}
# docs.k3s.io/installation/requirements, "Hardware": server 2 GB, agent 512 MB.
MEMORY_RECOMMENDED_MIB = {"server": 2000 * 1000 * 1000 // 2**20, "agent": 512 * 1000 * 1000 // 2**20}
MEMORY_SOURCES = "docs.k3s.io/reference/resource-profiling"
RECOMMENDED_SOURCE = "docs.k3s.io/installation/requirements"

# Ready waits: a TCG lab VM (QEMU's software CPU, no KVM) runs k3s several times slower
# than hardware; real hosts and KVM guests wait the base time.
ACCEL_FACTORS = {"tcg": 4, "kvm": 1}

# `k3s --version` prints "k3s version v1.35.0+k3s3 (f061615c)" then "go version ...";
# k3s-io/k3s-ansible reads the third word of the first line (roles/k3s_upgrade).
_VERSION_LINE = re.compile(r"k3s version (v[0-9]+\.[0-9]+\.[0-9]+(?:-rc[0-9]+)?\+k3s[0-9]+)(?: .*)?")
_RELEASE = re.compile(r"v([0-9]+)\.([0-9]+)\.([0-9]+)(?:-rc([0-9]+))?\+k3s([0-9]+)")
_MEMTOTAL = re.compile(r"MemTotal:\s+([0-9]+) kB")
# A kubeadm bootstrap token ("[a-z0-9]{6}.[a-z0-9]{16}", pkg/kubeadm).
_BOOTSTRAP = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")
_CA_HASH_LENGTH = 64
_PROXY_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
# docs.k3s.io advanced: "Configuring an HTTP proxy" shows NO_PROXY=127.0.0.0/8,...; the
# in-cluster names keep pod-to-service traffic off the proxy too.
_NO_PROXY_BASE = ("127.0.0.0/8", "localhost", ".svc", ".cluster.local")
_ENV_VALUE = re.compile(r"[^\s\"'\\$`#]*")


class NodeCheckError(Exception):
    """A node input that cannot be read (not the node failing a check: that is a result)."""


def parse_meminfo(text):
    """MemTotal of /proc/meminfo in KiB."""
    found = _MEMTOTAL.search(str(text))
    if not found:
        raise NodeCheckError("/proc/meminfo has no 'MemTotal: N kB' line")
    return int(found.group(1))


def memory_check(node, role, meminfo, minimum_mib=None):
    """{ok, have_mib, need_mib, recommended_mib, message, warning} for a node's memory.

    A node below the k3s minimum fails (message); one below the recommended size passes with
    a warning. minimum_mib overrides the minimum (a user's explicit, documented choice).
    """
    if role not in MEMORY_MINIMUM_MIB:
        raise NodeCheckError(f"k3s role {role!r} is not one of: server, agent")
    have = parse_meminfo(meminfo) // 1024
    need = int(minimum_mib) if minimum_mib is not None else MEMORY_MINIMUM_MIB[role]
    recommended = MEMORY_RECOMMENDED_MIB[role]
    what = "a k3s server with embedded etcd" if role == "server" else "a k3s agent"
    result = {"ok": have >= need, "have_mib": have, "need_mib": need, "recommended_mib": recommended, "message": "", "warning": ""}
    if have < need:
        result["message"] = (
            f"{node} has {have} MiB of memory (MemTotal), but {what} needs at least {need} MiB "
            f"({MEMORY_SOURCES}; {RECOMMENDED_SOURCE} asks for {recommended} MiB): give the machine more memory "
            f"(lab VMs: lab_memory on the node or platform), or lower k3s_memory_minimum_mib knowingly"
        )
    elif have < recommended:
        result["warning"] = f"{node} has {have} MiB of memory; {RECOMMENDED_SOURCE} recommends {recommended} MiB for {what}"
    return result


def parse_release(version):
    """(major, minor, patch, rc or a large number, k3s build) of a release tag; None if not one."""
    found = _RELEASE.fullmatch(str(version))
    if not found:
        return None
    major, minor, patch, rc, build = found.groups()
    return (int(major), int(minor), int(patch), int(rc) if rc else 10**6, int(build))


def installed_version(output):
    """The release tag `k3s --version` printed, or None."""
    lines = str(output).strip().splitlines()
    found = _VERSION_LINE.fullmatch(lines[0].strip()) if lines else None
    return found.group(1) if found else None


def version_problem(node, output, wanted):
    """'' when `k3s --version` on the node reports wanted, else why not (naming both)."""
    found = installed_version(output)
    if found == wanted:
        return ""
    first = str(output).strip().splitlines()[0] if str(output).strip() else "nothing"
    return f"{node}: k3s --version reports {found or repr(first)}, but k3s_version is {wanted}"


def ready_timeout(base, accel=None):
    """{seconds, why}: the bounded Ready wait for a node and how it was reached."""
    base = int(base)
    accel = (accel or "").lower()
    factor = ACCEL_FACTORS.get(accel, 1)
    why = f"{base} s"
    if accel in ACCEL_FACTORS:
        why = f"{accel.upper()} lab VM: " + (f"{factor} x {base} s" if factor != 1 else f"{base} s")
    return {"seconds": base * factor, "why": why}


def parse_token(token):
    """(ca_hash, username, password) of a k3s token, as pkg/clientaccess/token.go parseToken reads it.

    A bare password becomes "K10:::" + token (empty hash and username); a bootstrap token
    becomes "K10::" + token and has no username or password (returned as the password).
    """
    token = str(token).strip()
    if not token:
        raise NodeCheckError("token must not be empty")
    if not token.startswith("K10"):
        token = ("K10::" if _BOOTSTRAP.fullmatch(token) else "K10:::") + token
    ca_hash, separator, credentials = token[3:].partition("::")
    if not separator:
        ca_hash, credentials = "", ca_hash
    if ca_hash and len(ca_hash) != _CA_HASH_LENGTH:
        raise NodeCheckError("invalid token CA hash length")
    if _BOOTSTRAP.fullmatch(credentials):
        return ca_hash, "", credentials
    username, colon, password = credentials.partition(":")
    if not colon or not password:
        raise NodeCheckError("invalid token format")
    return ca_hash, username, password


def token_matches(given, bootstrapped):
    """Whether a token joins the cluster whose server token file holds bootstrapped.

    /var/lib/rancher/k3s/server/token is "K10<ca hash>::server:<password>" (docs.k3s.io
    cli/token). A short token must equal the password; a full one must also carry that hash.
    """
    try:
        given_hash, _user, given_password = parse_token(given)
        cluster_hash, _server, cluster_password = parse_token(bootstrapped)
    except NodeCheckError:
        return False
    return given_password == cluster_password and given_hash in ("", cluster_hash)


def node_networks(profile, node):
    """The node's networks (one per network role, as CIDRs), in role order."""
    networks = []
    for role in network_roles(profile):
        address = profile["ip_addresses"][node][role]
        network = str(ipaddress.ip_interface(f"{address}/{profile['prefix_length']}").network)
        if network not in networks:
            networks.append(network)
    return networks


def no_proxy(profile, node, extra=()):
    """NO_PROXY for a node: loopback and in-cluster names, its networks, the server_api host,
    the cluster and service CIDRs, then the user's extras (docs.k3s.io advanced: the nodes'
    own address ranges must bypass the proxy)."""
    entries = [*_NO_PROXY_BASE, *node_networks(profile, node), server_api_host(profile), str(profile["cluster_cidr"]), str(profile["service_cidr"])]
    entries.extend(str(item) for item in extra)
    return list(dict.fromkeys(entry for entry in entries if entry))


def env_file(profile, node, role, http_proxy="", https_proxy="", no_proxy_extra=(), containerd_proxy=False):
    """Text of /etc/systemd/system/<unit>.env (mode 0600, as install.sh create_env_file makes it).

    With a proxy it carries HTTP_PROXY, HTTPS_PROXY and NO_PROXY (k3s passes them to
    containerd and the kubelet); with containerd_proxy only CONTAINERD_* ones, which leave
    k3s and the kubelet direct (docs.k3s.io advanced). Without a proxy it holds the header only.
    """
    if role not in MEMORY_MINIMUM_MIB:
        raise NodeCheckError(f"k3s role {role!r} is not one of: server, agent")
    values = {"HTTP_PROXY": http_proxy or "", "HTTPS_PROXY": https_proxy or ""}
    for name, value in values.items():
        if not _ENV_VALUE.fullmatch(value):
            raise NodeCheckError(f"k3s_{name.lower()}: {value!r} must be one URL without spaces, quotes, '$', '`' or '#'")
    for item in no_proxy_extra:
        if not _ENV_VALUE.fullmatch(str(item)) or "," in str(item):
            raise NodeCheckError(f"k3s_no_proxy: {item!r} must be one host, domain or CIDR without spaces or commas")
    lines = [f"# Generated by n3x.cluster for the k3s {role} of {node}; changes here are overwritten."]
    if values["HTTP_PROXY"] or values["HTTPS_PROXY"]:
        values["NO_PROXY"] = ",".join(no_proxy(profile, node, no_proxy_extra))
        prefix = "CONTAINERD_" if containerd_proxy else ""
        lines.extend(f"{prefix}{name}={values[name]}" for name in _PROXY_NAMES if values[name])
    return "\n".join(lines) + "\n"
