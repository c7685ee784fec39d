"""L4: the cluster formed as the profile and the inventory say (asked from the first server)."""


def conditions(node_object):
    return {c["type"]: c["status"] for c in node_object["status"]["conditions"]}


def test_every_node_ready(kubectl, lab_nodes):
    nodes = {n["metadata"]["name"]: n for n in kubectl("get", "nodes")["items"]}
    assert sorted(nodes) == sorted(lab_nodes)
    for name, node_object in nodes.items():
        assert conditions(node_object)["Ready"] == "True", (name, node_object["status"]["conditions"])


def test_node_internal_ip_is_the_profile_cluster_address(kubectl, profile):
    for node_object in kubectl("get", "nodes")["items"]:
        name = node_object["metadata"]["name"]
        addresses = {a["type"]: a["address"] for a in node_object["status"]["addresses"]}
        assert addresses["InternalIP"] == profile["ip_addresses"][name]["cluster"], name


def test_servers_and_agents_have_their_roles(kubectl, servers, agents):
    for node_object in kubectl("get", "nodes")["items"]:
        labels = node_object["metadata"]["labels"]
        is_server = labels.get("node-role.kubernetes.io/control-plane") == "true"
        assert is_server == (node_object["metadata"]["name"] in servers), node_object["metadata"]["name"]


def test_joined_in_order_init_server_then_servers_then_agents(kubectl, servers, agents, init_server):
    """The init server (server_api's host) registered first, then the other servers, then the agents."""
    created = {n["metadata"]["name"]: n["metadata"]["creationTimestamp"] for n in kubectl("get", "nodes")["items"]}
    order = sorted(created, key=created.get)
    assert order[0] == init_server, created
    assert sorted(order[: len(servers)]) == sorted(servers), created
    assert sorted(order[len(servers) :]) == sorted(agents), created


def test_etcd_healthy_with_every_server_a_member(kubectl, servers):
    readyz = kubectl("get", "--raw", "'/readyz?verbose'", raw=True)
    assert "[+]etcd ok" in readyz, readyz
    etcd_nodes = [n["metadata"]["name"] for n in kubectl("get", "nodes")["items"] if n["metadata"]["labels"].get("node-role.kubernetes.io/etcd") == "true"]
    assert sorted(etcd_nodes) == sorted(servers)


def test_coredns_and_local_path_provisioner_running(kubectl):
    for selector in ("k8s-app=kube-dns", "app=local-path-provisioner"):
        pods = kubectl("get", "pods", "--namespace=kube-system", f"--selector={selector}")["items"]
        assert pods, f"no pod matches {selector}"
        for pod in pods:
            assert pod["status"]["phase"] == "Running", (selector, pod["status"])
