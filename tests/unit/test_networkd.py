"""networkd generator rules beyond the golden files: layouts the shipped profiles do not cover."""

import configparser

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_networkd import networkd_interfaces, networkd_units
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import (
    ProfileError,
    kernel_modules,
    physical_interfaces,
    validate_profile,
)


def parse(text):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    # Repeated keys (VLAN=, Address=) would collapse in configparser: number them.
    counted, seen = [], {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            seen[key] = seen.get(key, 0) + 1
            line = f"{key}#{seen[key]}={value}"
        elif line.startswith("["):
            seen = {}
        counted.append(line)
    parser.read_string("\n".join(counted))
    return parser


def test_flat_interface_with_two_roles_gets_both_addresses():
    profile = validate_profile(
        {
            "ip_addresses": {"a": {"cluster": "10.1.0.1", "storage": "10.2.0.1"}},
            "interfaces": {"cluster": "eth1", "storage": "eth1"},
            "server_api": "https://10.1.0.1:6443",
        }
    )
    units = networkd_units(profile, "a")
    assert list(units) == ["20-n3x-eth1.network"]
    text = units["20-n3x-eth1.network"]
    assert text.count("Address=") == 2
    assert "Address=10.1.0.1/24" in text
    assert "Address=10.2.0.1/24" in text


def test_bond_without_vlans_carries_the_address():
    profile = validate_profile(
        {
            "ip_addresses": {"a": {"cluster": "10.1.0.1"}},
            "interfaces": {"cluster": "bond0", "trunk": "bond0", "bond_members": ["eth1", "eth2"]},
            "bond": {"mode": "802.3ad", "miimon": 100, "lacp_rate": "fast", "transmit_hash_policy": "layer3+4"},
            "server_api": "https://10.1.0.1:6443",
        }
    )
    units = networkd_units(profile, "a")
    assert list(units) == ["10-n3x-bond0.netdev", "10-n3x-eth1.network", "10-n3x-eth2.network", "20-n3x-bond0.network"]
    bond = parse(units["10-n3x-bond0.netdev"])
    assert bond["Bond"]["Mode#1"] == "802.3ad"
    assert bond["Bond"]["LACPTransmitRate#1"] == "fast"
    assert bond["Bond"]["TransmitHashPolicy#1"] == "layer3+4"
    assert "PrimarySlave" not in units["10-n3x-eth1.network"]
    assert parse(units["20-n3x-bond0.network"])["Network"]["Address#1"] == "10.1.0.1/24"
    assert physical_interfaces(profile) == ["eth1", "eth2"]
    assert kernel_modules(profile) == ["bonding"]
    assert networkd_interfaces(profile, "a") == ["bond0:routable"]


def test_honours_profile_bond_settings():
    # The original's Debian generator always wrote 802.3ad; ours follows the profile.
    profile = validate_profile(
        {
            "ip_addresses": {"a": {"cluster": "10.1.0.1"}},
            "interfaces": {"cluster": "bond0", "trunk": "bond0", "bond_members": ["eth1", "eth2"]},
            "bond": {"mode": "balance-alb", "primary": "eth2", "miimon": 50, "updelay": 150, "downdelay": 100, "primary_reselect": "better"},
            "server_api": "https://10.1.0.1:6443",
        }
    )
    units = networkd_units(profile, "a")
    bond = parse(units["10-n3x-bond0.netdev"])["Bond"]
    assert dict(bond) == {
        "Mode#1": "balance-alb",
        "PrimaryReselectPolicy#1": "better",
        "MIIMonitorSec#1": "50ms",
        "UpDelaySec#1": "150ms",
        "DownDelaySec#1": "100ms",
    }
    assert "PrimarySlave=true" in units["10-n3x-eth2.network"]
    assert "PrimarySlave" not in units["10-n3x-eth1.network"]


def test_dhcp_keeps_other_roles_static():
    profile = validate_profile(
        {
            "addressing": "dhcp",
            "ip_addresses": {"a": {"cluster": "10.1.0.1", "storage": "10.2.0.1"}},
            "interfaces": {"cluster": "eth1", "storage": "eth2"},
            "dhcp": {"server": "10.1.0.254", "range_start": "10.1.0.100", "range_end": "10.1.0.200"},
            "mac_addresses": {"a": "52:54:00:00:00:01"},
            "server_api": "https://10.1.0.1:6443",
        }
    )
    units = networkd_units(profile, "a")
    assert "DHCP=ipv4" in units["20-n3x-eth1.network"]
    assert "Address=" not in units["20-n3x-eth1.network"]
    assert "DHCP=no" in units["20-n3x-eth2.network"]
    assert "Address=10.2.0.1/24" in units["20-n3x-eth2.network"]


def test_units_name_only_profile_interfaces(tmp_path):
    profile = validate_profile(
        {
            "ip_addresses": {"a": {"cluster": "10.1.0.1"}},
            "interfaces": {"cluster": "eth1"},
            "server_api": "https://10.1.0.1:6443",
        }
    )
    for text in networkd_units(profile, "a").values():
        assert "eth0" not in text


def test_every_unit_has_header_and_parses():
    profile = validate_profile(
        {
            "ip_addresses": {"a": {"cluster": "10.1.0.1", "storage": "10.2.0.1"}},
            "interfaces": {"cluster": "bond0.10", "storage": "bond0.20", "trunk": "bond0", "bond_members": ["eth1", "eth2"]},
            "vlan_ids": {"cluster": 10, "storage": 20},
            "bond": {"primary": "eth1"},
            "server_api": "https://10.1.0.1:6443",
        }
    )
    units = networkd_units(profile, "a")
    assert networkd_interfaces(profile, "a") == ["bond0:carrier", "bond0.10:routable", "bond0.20:routable"]
    assert list(units) == sorted(units)
    for name, text in units.items():
        assert text.startswith("# Generated by n3x.cluster for a;"), name
        parse(text)


def test_unknown_node():
    profile = validate_profile({"ip_addresses": {"a": {"cluster": "10.1.0.1"}}, "interfaces": {"cluster": "eth1"}, "server_api": "https://10.1.0.1:6443"})
    with pytest.raises(ProfileError, match=r"node 'b' is not in ip_addresses \(nodes: a\)"):
        networkd_units(profile, "b")


def test_dnsmasq_config_for_dhcp_simple():
    import pathlib

    from ansible_collections.n3x.cluster.plugins.module_utils.n3x_dhcp import dhcp_server_units, dnsmasq_config
    from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import load_profile

    profile = load_profile("dhcp-simple", str(pathlib.Path(__file__).resolve().parents[2] / "profiles"))[1]
    text = dnsmasq_config(profile)
    lines = text.splitlines()
    assert "port=0" in lines
    assert "interface=eth1" in lines
    assert "dhcp-range=192.168.1.100,192.168.1.200,255.255.255.0,12h" in lines
    assert [line for line in lines if line.startswith("dhcp-host=")] == [
        "dhcp-host=52:54:00:01:01:01,server-1,192.168.1.1,12h",
        "dhcp-host=52:54:00:01:01:02,server-2,192.168.1.2,12h",
        "dhcp-host=52:54:00:01:01:03,agent-1,192.168.1.3,12h",
        "dhcp-host=52:54:00:01:01:04,agent-2,192.168.1.4,12h",
    ]
    assert "Address=192.168.1.254/24" in dhcp_server_units(profile)["20-n3x-eth1.network"]
    with pytest.raises(ProfileError, match="addressing: is not dhcp"):
        dnsmasq_config(load_profile("simple", str(pathlib.Path(__file__).resolve().parents[2] / "profiles"))[1])


def test_networkd_files_include_the_module_list():
    import pathlib

    from ansible_collections.n3x.cluster.plugins.module_utils.n3x_networkd import networkd_files
    from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import load_profile

    profiles = str(pathlib.Path(__file__).resolve().parents[2] / "profiles")
    bonded = networkd_files(load_profile("bonding-vlans", profiles)[1], "server-1")
    assert bonded[0]["path"] == "/etc/systemd/network/10-n3x-bond0.netdev"
    assert bonded[-1] == {
        "path": "/etc/modules-load.d/n3x-network.conf",
        "content": "# Generated by n3x.cluster for server-1; changes here are overwritten.\nbonding\n8021q\n",
    }
    flat = networkd_files(load_profile("simple", profiles)[1], "server-1", unit_dir="/srv/units")
    assert [f["path"] for f in flat] == ["/srv/units/20-n3x-eth1.network", "/etc/modules-load.d/n3x-network.conf"]
    assert flat[-1]["content"].count("\n") == 1
