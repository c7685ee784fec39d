"""Pod networking: CoreDNS resolves services, pods on two nodes reach each other over flannel,
and flannel's VXLAN runs on the profile's cluster interface."""

import ipaddress
import json

import pytest

NAMESPACE = "n3x-network-test"


@pytest.fixture
def pods(node, init_server, lab_nodes, kubectl_apply, test_image, kubectl):
    """Two pods pinned to two different nodes plus a service; asked once, from the init server."""
    if node != init_server:
        pytest.skip("a cluster-wide check: runs once, for the init server")
    # Lookups before CoreDNS is Ready fail for reasons that are not the network's.
    kubectl("wait", "--namespace=kube-system", "pod", "--selector=k8s-app=kube-dns", "--for=condition=Ready", "--timeout=300s", raw=True)
    first, second = lab_nodes[0], lab_nodes[-1]
    manifest = [f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}"]
    for name, where in (("left", first), ("right", second)):
        manifest.append(
            f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {NAMESPACE}, labels: {{app: {name}}}}}
spec:
  nodeName: {where}
  containers:
    - name: shell
      image: {test_image}
      imagePullPolicy: IfNotPresent
      command: [sh, -c, "while true; do echo n3x | nc -l -p 8080; done"]"""
        )
    manifest.append(
        f"""apiVersion: v1
kind: Service
metadata: {{name: right, namespace: {NAMESPACE}}}
spec:
  selector: {{app: right}}
  ports: [{{port: 8080, targetPort: 8080}}]"""
    )
    kubectl_apply("\n---\n".join(manifest))
    for name in ("left", "right"):
        kubectl("wait", f"--namespace={NAMESPACE}", f"pod/{name}", "--for=condition=Ready", "--timeout=300s", raw=True)
    found = {name: kubectl("get", "pod", name, f"--namespace={NAMESPACE}") for name in ("left", "right")}
    assert found["left"]["spec"]["nodeName"] != found["right"]["spec"]["nodeName"]
    return found


def in_left(kubectl, command):
    return kubectl("exec", f"--namespace={NAMESPACE}", "left", "--", "sh", "-c", f"'{command}'", raw=True)


def test_coredns_resolves_services(pods, kubectl, profile):
    service_ip = kubectl("get", "service", "right", f"--namespace={NAMESPACE}")["spec"]["clusterIP"]
    answer = in_left(kubectl, f"nslookup right.{NAMESPACE}.svc.cluster.local")
    assert service_ip in answer, answer
    kubernetes_ip = str(ipaddress.ip_network(profile["service_cidr"])[1])
    assert kubernetes_ip in in_left(kubectl, "nslookup kubernetes.default.svc.cluster.local")


def test_pods_on_two_nodes_reach_each_other(pods, kubectl):
    right_ip = pods["right"]["status"]["podIP"]
    assert in_left(kubectl, f"nc -w 5 {right_ip} 8080").strip() == "n3x"
    assert in_left(kubectl, f"nc -w 5 right.{NAMESPACE}.svc.cluster.local 8080").strip() == "n3x"


def test_pod_addresses_come_from_the_profile_cluster_cidr(pods, profile):
    network = ipaddress.ip_network(profile["cluster_cidr"])
    for pod in pods.values():
        assert ipaddress.ip_address(pod["status"]["podIP"]) in network


def test_flannel_vxlan_on_the_profile_cluster_interface(host, node, profile):
    """The overlay's underlay is the profile's cluster network, not the management NIC."""
    from lab_fixtures import node_interfaces

    link = host.run("ip -d -json link show flannel.1")
    assert link.rc == 0, link.stderr
    vxlan = json.loads(link.stdout)[0]["linkinfo"]["info_data"]
    assert vxlan["local"] == profile["ip_addresses"][node]["cluster"]
    assert vxlan["link"] == node_interfaces(profile, node)["cluster"]
