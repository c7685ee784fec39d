"""Storage: a PVC is bound through local-path and written by a pod; Longhorn prerequisites hold."""

import pytest

NAMESPACE = "n3x-storage-test"


@pytest.fixture
def written(node, init_server, kubectl_apply, test_image, kubectl):
    """The writer pod's namespace applied (idempotent) and finished; asked once, from the init server."""
    if node != init_server:
        pytest.skip("a cluster-wide check: runs once, for the init server")
    kubectl_apply(
        f"""apiVersion: v1
kind: Namespace
metadata: {{name: {NAMESPACE}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: {NAMESPACE}}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: local-path
  resources: {{requests: {{storage: 64Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: writer, namespace: {NAMESPACE}}}
spec:
  restartPolicy: Never
  containers:
    - name: writer
      image: {test_image}
      imagePullPolicy: IfNotPresent
      command: [sh, -c, "echo written-by-n3x > /data/proof && cat /data/proof"]
      volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: data}}}}]
"""
    )
    kubectl("wait", f"--namespace={NAMESPACE}", "pod/writer", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=300s", raw=True)
    return kubectl


def test_pvc_bound_through_local_path(written):
    claim = written("get", "pvc", "data", f"--namespace={NAMESPACE}")
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "local-path"


def test_pod_wrote_to_the_volume(written):
    log = written("logs", f"--namespace={NAMESPACE}", "writer", raw=True)
    assert log.strip() == "written-by-n3x"


def test_the_data_is_on_the_node_that_ran_the_pod(written, host_of):
    pod = written("get", "pod", "writer", f"--namespace={NAMESPACE}")
    node = host_of(pod["spec"]["nodeName"])
    found = node.run("cat /var/lib/rancher/k3s/storage/pvc-*_" + NAMESPACE + "_data/proof")
    assert found.stdout.strip() == "written-by-n3x", found.stderr


@pytest.mark.parametrize("module", ["iscsi_tcp", "dm_crypt"])
def test_longhorn_kernel_modules(host, module):
    assert module in host.run("cut -d' ' -f1 /proc/modules").stdout.split()


def test_longhorn_prerequisites(host):
    assert host.service("iscsid").is_running
    assert host.file("/var/lib/longhorn").is_directory
    for command in ("iscsiadm", "mkfs.ext4", "mkfs.xfs", "nsenter"):
        assert host.run(f"PATH=$PATH:/usr/sbin:/sbin command -v {command}").rc == 0, command


def test_resetting_the_volume_node_needs_its_name(written, ansible_playbook):
    """playbooks/reset.yml --limit NODE refuses, changing nothing, while NODE holds a local-path volume."""
    node = written("get", "pod", "writer", f"--namespace={NAMESPACE}")["spec"]["nodeName"]
    volume = written("get", "pvc", "data", f"--namespace={NAMESPACE}")["spec"]["volumeName"]
    result = ansible_playbook("reset.yml", "--limit", node)
    text = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert f"nothing changed: {node} holds the local-path volumes {volume}; their data is deleted with the node" in text
    assert f"-e k3s_reset_confirm={node}" in text
    ready = {c["type"]: c["status"] for c in written("get", "node", node)["status"]["conditions"]}
    assert ready["Ready"] == "True"
