#!/bin/sh
# Installed as /usr/local/bin/k3s-killall.sh, where install.sh puts its own (create_killall),
# and run by the n3x.cluster.k3s role on reset. Like upstream's: stops every k3s*.service,
# kills the container shims and their children (KillMode=process leaves them running),
# unmounts and removes the mounts below /run/k3s, /var/lib/kubelet/pods and
# /var/lib/kubelet/plugins, deletes the CNI namespaces and interfaces, /var/lib/cni and the
# KUBE-/CNI-/flannel iptables rules. Like upstream's since k3s-io/k3s#10403 (issue #8527),
# nothing below the data directory is unmounted: its server/ and agent/ may be filesystems of
# their own (docs.k3s.io reference/resource-profiling), which a plain killall must leave in
# place. Unlike upstream's prefix match ('/run/k3s'* also matched /run/k3s-anything), a mount
# is k3s's only when it is one of those directories or below one; only CNI namespaces match
# by name prefix (/run/netns/cni-*). Prints "changed" if it did anything.
#   k3s-killall.sh                               stop everything k3s runs on this node
#   k3s-killall.sh --list-mounts FILE            print the mounts it would unmount (from a mounts file)
#   k3s-killall.sh --list-blocking-mounts FILE   print the mounts below what an uninstall removes
#                                                (the data directory, /var/lib/kubelet, /run/k3s...)
set -u
case "${1:-}" in
    --list-mounts | --list-blocking-mounts) ;;
    *) [ "$(id -u)" -eq 0 ] || exec sudo --preserve-env=K3S_DATA_DIR "$0" "$@" ;;
esac

K3S_DATA_DIR=${K3S_DATA_DIR:-/var/lib/rancher/k3s}
MOUNTS=/proc/self/mounts
# What killall unmounts: the trees of install.sh's do_unmount_and_remove calls, and the one
# name prefix (CNI network namespaces).
UNMOUNT_TREES="/run/k3s /var/lib/kubelet/pods /var/lib/kubelet/plugins"
NAME_PREFIX=/run/netns/cni-
# What an uninstall removes with rm -rf: never through a mount left below one of them.
REMOVED_TREES="/etc/rancher/k3s /run/k3s /run/flannel $K3S_DATA_DIR /var/lib/kubelet"

# mounts_below TREES PREFIX: the mounts at or below TREES (or named PREFIX*), deepest first,
# so a parent is never busy because of a child.
mounts_below() {
    awk -v trees="$1" -v prefix="$2" '
        BEGIN { n = split(trees, roots, " ") }
        {
            for (i = 1; i <= n; i++) if ($2 == roots[i] || index($2, roots[i] "/") == 1) { print $2; next }
            if (prefix != "" && index($2, prefix) == 1) print $2
        }' "$MOUNTS" | LC_ALL=C sort -r -u
}

case "${1:-}" in
    --list-mounts)
        MOUNTS=${2:?usage: k3s-killall.sh --list-mounts MOUNTS_FILE}
        mounts_below "$UNMOUNT_TREES" "$NAME_PREFIX"
        exit 0
        ;;
    --list-blocking-mounts)
        MOUNTS=${2:?usage: k3s-killall.sh --list-blocking-mounts MOUNTS_FILE}
        mounts_below "$REMOVED_TREES" ""
        exit 0
        ;;
esac

changed=
for bin in "$K3S_DATA_DIR"/data/*/bin/; do
    [ -d "$bin" ] && PATH=$PATH:$bin:${bin}aux
done
export PATH

for service in /etc/systemd/system/k3s*.service; do
    [ -s "$service" ] || continue
    if systemctl is-active --quiet "$(basename "$service")"; then
        systemctl stop "$(basename "$service")" && changed=1
    fi
done

# Shims outlive k3s (KillMode=process) and keep the containers under them running.
shims=$(ps -e -o pid= -o args= | awk -v dir="$K3S_DATA_DIR/data/" '
    index($2, dir) == 1 && substr($2, length(dir) + 1) ~ /^[^\/]+\/bin\/containerd-shim/ {print $1}')
if [ -n "$shims" ]; then
    all=$shims
    level=$shims
    while [ -n "$level" ]; do
        next=
        for pid in $level; do
            next="$next $(ps -o pid= --ppid "$pid")"
        done
        level=$(echo "$next" | xargs)
        all="$all $level"
    done
    for pid in $all; do
        kill -9 "$pid" 2>/dev/null
    done
    changed=1
fi

for mount in $(mounts_below "$UNMOUNT_TREES" "$NAME_PREFIX"); do
    umount -f "$mount" && rm -rf "$mount"
    changed=1
done

for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do
    ip netns delete "$ns" && changed=1
done

for iface in $(ip -o link show master cni0 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link delete "$iface" && changed=1
done
for iface in cni0 flannel.1 flannel-v6.1 kube-ipvs0 flannel-wg flannel-wg-v6; do
    if ip link show "$iface" >/dev/null 2>&1; then
        ip link delete "$iface" && changed=1
    fi
done

if [ -d /var/lib/cni ]; then
    rm -rf /var/lib/cni
    changed=1
fi

for family in iptables ip6tables; do
    command -v "$family-save" >/dev/null 2>&1 || continue
    if "$family-save" | grep -q -i -e KUBE- -e CNI- -e flannel; then
        "$family-save" | grep -v -e KUBE- -e CNI- | grep -iv flannel | "$family-restore"
        changed=1
    fi
done

[ -n "$changed" ] && echo changed
exit 0
