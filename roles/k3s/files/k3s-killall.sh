#!/bin/sh
# Stops what k3s leaves running once its units are stopped, as upstream k3s-killall.sh does:
# container shims and their containers, k3s and kubelet mounts, CNI namespaces, flannel
# and CNI interfaces and the iptables rules they added. Prints "changed" if it did anything.
set -u
changed=

# Shims outlive k3s (KillMode=process) and keep the containers under them running.
shims=$(ps -e -o pid= -o args= | awk '$2 ~ /k3s\/data\/[^\/]*\/bin\/containerd-shim/ {print $1}')
if [ -n "$shims" ]; then
    all=$shims
    level=$shims
    while [ -n "$level" ]; do
        next=
        for pid in $level; do
            next="$next $(ps -o pid= --ppid "$pid")"
        done
        level=$(echo $next)
        all="$all $level"
    done
    kill -9 $all 2>/dev/null
    changed=1
fi

# Deepest mounts first, so a parent is never busy because of a child.
unmount_below() {
    for mount in $(awk -v prefix="$1" 'index($2, prefix) == 1 {print $2}' /proc/self/mounts | sort -r); do
        umount -f "$mount" && rm -rf "$mount"
        changed=1
    done
}
unmount_below /run/k3s
unmount_below /var/lib/rancher/k3s
unmount_below /var/lib/kubelet/pods
unmount_below /var/lib/kubelet/plugins
unmount_below /run/netns/cni-

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
