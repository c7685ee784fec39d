"""The filters validate what they are given and fail with the profile's own messages."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.n3x.cluster.plugins.filter.k3s_config import k3s_config
from ansible_collections.n3x.cluster.plugins.filter.networkd_units import networkd_units
from ansible_collections.n3x.cluster.plugins.filter.node_files import node_files

RAW = {"ip_addresses": {"a": {"cluster": "10.1.0.1"}}, "interfaces": {"cluster": "eth1"}, "server_api": "https://10.1.0.1:6443"}


def test_raw_yaml_dict_is_validated_and_rendered():
    assert list(networkd_units(RAW, "a")) == ["20-n3x-eth1.network"]
    assert k3s_config(RAW, "a", "server")["cluster-init"] is True


def test_invalid_profile_is_one_filter_error():
    with pytest.raises(AnsibleFilterError, match=r"^profile: server_api: is required$"):
        networkd_units({k: v for k, v in RAW.items() if k != "server_api"}, "a")


def test_k3s_errors_name_the_node():
    with pytest.raises(AnsibleFilterError, match=r"k3s config of a: tls-san: is a k3s server flag only"):
        k3s_config(RAW, "a", "agent", extra={"tls-san": ["x"]})


def test_node_files_rejects_wrong_nodes_argument():
    with pytest.raises(AnsibleFilterError, match="nodes must be the nodes list"):
        node_files(RAW, ["a"])
