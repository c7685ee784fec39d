"""Finding the other managers that claim a node's interfaces (issue 17), on node trees.

Each tree mirrors the real files of Debian bookworm hosts (netplan 0.106, NetworkManager
1.42, ifupdown 0.8.41, systemd 252); what these managers then do on a real host is proven in
the VMs of molecule/network-takeover.
"""

import json

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_network_claims as nc
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import GENERATED_MARKER
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_networkd import networkd_files
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import load_profile, validate_profile

from .takeover_hosts import Runner, fixture, lab_nics, nic, process, symlink, write
from .test_networkd_apply import PROFILES


def node_files(profile="vlans", node="server-1"):
    return networkd_files(load_profile(profile, str(PROFILES))[1], node)


def claims(root, files=None, runner=None):
    return nc.find_claims(nc.HostView(str(root), runner or Runner()), files or node_files(), "/etc/systemd/network", GENERATED_MARKER)


def summary(found):
    return sorted((c.manager, c.interface, c.source, c.action) for c in found)


@pytest.fixture
def root(tmp_path):
    lab_nics(tmp_path)
    write(tmp_path, "/etc/systemd/network/10-eth0-mgmt.network", "[Match]\nName=eth0\n\n[Network]\nAddress=10.0.2.15/24\n")
    # Debian's systemd ships these; they sort after ours or match other links.
    write(tmp_path, "/usr/lib/systemd/network/80-container-host0.network", "[Match]\nVirtualization=container\nName=host0\n\n[Network]\nDHCP=yes\n")
    write(tmp_path, "/usr/lib/systemd/network/99-default.link", "[Match]\nOriginalName=*\n\n[Link]\nNamePolicy=keep kernel database onboard slot path\n")
    return tmp_path


def test_a_host_only_networkd_manages_has_no_claims(root):
    assert claims(root) == []


# ------------------------------------------------------------------ netplan -------------


def with_netplan(root, text=None, name="50-cloud-init.yaml"):
    write(root, "/usr/sbin/netplan", "")
    write(root, f"/etc/netplan/{name}", text or fixture("netplan-50-cloud-init.yaml"), 0o600)
    write(root, "/run/systemd/network/10-netplan-eth0.network", fixture("10-netplan-eth0.network"))
    write(root, "/run/systemd/network/10-netplan-eth1.network", fixture("10-netplan-eth1.network"))


def test_netplan_cloud_init_file_claims_the_nic_and_names_its_rendered_file(root):
    with_netplan(root)
    (claim,) = claims(root)
    assert (claim.manager, claim.interface, claim.source, claim.action) == ("netplan", "eth1", "/etc/netplan/50-cloud-init.yaml", "netplan")
    assert claim.details["netplan_id"] == "eth1"
    message = claim.message()
    assert "network.ethernets.eth1 configures eth1 (dhcp4)" in message
    assert "/run/systemd/network/10-netplan-eth1.network, which networkd applies before 20-n3x-eth1.network" in message
    assert "networkd_take_over: true" in message
    # eth0 is not the profile's: netplan's stanza for it is nobody's business here.
    assert "eth0" not in message


def test_netplan_rendered_for_networkmanager_names_the_keyfile(root):
    with_netplan(root, "network:\n  version: 2\n  renderer: NetworkManager\n  ethernets:\n    eth1:\n      dhcp4: true\n")
    for name in ("eth0", "eth1"):
        (root / f"run/systemd/network/10-netplan-{name}.network").unlink()
    (claim,) = claims(root)
    assert "rendered for NetworkManager as /run/NetworkManager/system-connections/netplan-eth1.nmconnection" in claim.message()


def test_netplan_match_that_also_covers_the_management_nic_is_refused_even_for_take_over(root):
    with_netplan(root, "network:\n  version: 2\n  ethernets:\n    lan:\n      match: {name: 'eth*'}\n      dhcp4: true\n")
    found = claims(root)
    assert {c.interface for c in found} == {"eth1", "eth1.100", "eth1.200"}
    eth1 = next(c for c in found if c.interface == "eth1")
    assert eth1.action is None
    assert "it also matches eth0" in eth1.message()


def test_netplan_vlan_on_the_nic_makes_the_nic_definition_unmovable(root):
    with_netplan(root, "network:\n  version: 2\n  ethernets:\n    eth1: {}\n  vlans:\n    vlan300: {id: 300, link: eth1, addresses: [10.3.0.1/24]}\n")
    (claim,) = claims(root)
    assert claim.action is None
    assert "network.vlans.vlan300 depend on it" in claim.message()


def test_netplan_files_in_run_shadow_etc_and_nothing_counts_without_netplan(root):
    with_netplan(root)
    write(root, "/run/netplan/50-cloud-init.yaml", "network:\n  version: 2\n  ethernets:\n    eth0: {dhcp4: true}\n")
    # /run/netplan/50-cloud-init.yaml hides the /etc one: eth1 is not netplan's; its stale
    # rendered file is still a networkd file that sorts before ours.
    assert summary(claims(root)) == [("systemd-networkd", "eth1", "/run/systemd/network/10-netplan-eth1.network", "mask")]
    (root / "usr/sbin/netplan").unlink()
    (root / "run/netplan/50-cloud-init.yaml").unlink()
    assert summary(claims(root)) == [("systemd-networkd", "eth1", "/run/systemd/network/10-netplan-eth1.network", "mask")]


def test_netplan_yaml_aliases_are_refused(root):
    with_netplan(root, "base: &b {dhcp4: true}\nnetwork:\n  version: 2\n  ethernets:\n    eth1: *b\n")
    with pytest.raises(nc.ClaimError, match=r"50-cloud-init\.yaml: YAML aliases are not read here"):
        claims(root)


# ------------------------------------------------------------------ networkd files ------


@pytest.mark.parametrize(
    ("path", "text", "action"),
    [
        ("/etc/systemd/network/05-eth1.network", "[Match]\nName=eth1\n\n[Network]\nDHCP=yes\n", "move"),
        ("/run/systemd/network/05-eth1.network", "[Match]\nName=eth1\n", "mask"),
        ("/usr/lib/systemd/network/05-eth1.network", "[Match]\nMACAddress=52-54-00-AA-01-01\n", "mask"),
        ("/usr/local/lib/systemd/network/05-virtio.network", "[Match]\nDriver=virtio_net\nName=!eth0\n", "mask"),
        ("/etc/systemd/network/05-path.network", "[Match]\nPath=pci-0000:00:04.*\n", "move"),
    ],
)
def test_an_earlier_networkd_file_that_matches_the_nic_is_a_claim(root, path, text, action):
    write(root, path, text)
    found = claims(root)
    claim = found[0]
    assert (claim.manager, claim.interface, claim.source, claim.action) == ("systemd-networkd", "eth1", path, action)
    assert "sorts before 20-n3x-eth1.network, so networkd applies it instead of ours" in claim.message()
    # A VLAN has its parent's MAC: a file that matches eth1 by MAC matches its VLANs too.
    assert [c.interface for c in found[1:]] == (["eth1.100", "eth1.200"] if "MACAddress" in text else [])


def test_networkd_files_that_sort_after_ours_are_masked_or_match_others_are_no_claims(root):
    write(root, "/etc/systemd/network/99-eth1.network", "[Match]\nName=eth1\n")
    write(root, "/run/systemd/network/05-eth1.network", "[Match]\nName=eth1\n")
    symlink(root, "/etc/systemd/network/05-eth1.network", "/dev/null")
    write(root, "/run/systemd/network/06-eth1.network", "[Match]\nName=eth1\n")
    write(root, "/etc/systemd/network/06-eth1.network", "")
    write(root, "/usr/lib/systemd/network/07-other.network", "[Match]\nName=eth2 eth3\n")
    write(root, "/usr/lib/systemd/network/07-mac.network", "[Match]\nMACAddress=52:54:00:99:99:99\n")
    assert claims(root) == []


def test_a_networkd_file_that_also_matches_the_management_nic_is_not_taken_over(root):
    write(root, "/usr/lib/systemd/network/05-all.network", "[Match]\nName=eth*\n\n[Network]\nDHCP=yes\n")
    found = {c.interface: c for c in claims(root)}
    assert set(found) == {"eth1", "eth1.100", "eth1.200"}
    assert found["eth1"].action is None
    assert "it also matches eth0" in found["eth1"].message()


def test_an_empty_match_matches_every_interface_and_unknown_conditions_may_match(root):
    write(root, "/run/systemd/network/05-any.network", "[Network]\nDHCP=yes\n")
    write(root, "/run/systemd/network/06-host.network", "[Match]\nName=eth1\nHost=edge-*\n")
    found = [c for c in claims(root) if c.interface == "eth1"]
    assert [c.source for c in found] == ["/run/systemd/network/05-any.network", "/run/systemd/network/06-host.network"]
    assert "may match (its [Match] has conditions not checked here)" in found[1].message()


def test_an_earlier_netdev_of_the_same_device_is_a_claim(root):
    write(root, "/run/systemd/network/10-vlan.netdev", "[NetDev]\nName=eth1.200\nKind=vlan\n\n[VLAN]\nId=2000\n")
    (claim,) = claims(root)
    assert (claim.interface, claim.action) == ("eth1.200", "mask")
    assert "creates eth1.200 and sorts before 30-n3x-eth1.200.netdev" in claim.message()


def test_our_own_files_and_stale_ones_are_no_claims(root):
    write(root, "/etc/systemd/network/20-n3x-eth1.network", f"{GENERATED_MARKER} for server-1\n[Match]\nName=eth1\n")
    write(root, "/etc/systemd/network/15-n3x-eth1.network", f"{GENERATED_MARKER} for server-1 (stale)\n[Match]\nName=eth1\n")
    assert claims(root) == []


@pytest.mark.parametrize(
    ("entries", "link", "expected"),
    [
        ([("Match", "Name", "eth1 eth2")], {"name": "eth2"}, True),
        ([("Match", "Name", "!eth0 lo")], {"name": "eth1"}, True),
        ([("Match", "Name", "!eth*")], {"name": "eth1"}, False),
        ([("Match", "Name", "eth9"), ("Match", "Name", ""), ("Match", "Name", "eth1")], {"name": "eth1"}, True),
        ([("Match", "MACAddress", "AABB.CCDD.EEFF")], {"name": "x", "mac": "aa:bb:cc:dd:ee:ff"}, True),
        ([("Match", "Type", "ether")], {"name": "eth1.200", "type": "vlan"}, False),
        ([("Match", "Driver", "virtio*")], {"name": "eth1.200", "driver": None}, None),
        ([("Match", "Architecture", "x86-64")], {"name": "eth1"}, None),
        ([("Network", "DHCP", "yes")], {"name": "eth1"}, True),
    ],
)
def test_network_file_match_rules(entries, link, expected):
    assert nc.network_file_matches(entries, link) is expected


def test_unit_parser_reads_continuations_and_comments():
    text = "# c\n[Match]\n; c\nName=eth1 \\\n  eth2\n[Network]\nAddress=10.0.0.1/24\n"
    assert nc.parse_unit(text) == [("Match", "Name", "eth1  eth2"), ("Network", "Address", "10.0.0.1/24")]


# ------------------------------------------------------------------ NetworkManager ------

NMCLI = "nmcli -t -f DEVICE,TYPE,STATE,CONNECTION device status"
NMCLI_CONNECTIONS = "nmcli -t -f NAME,FILENAME connection show"


def with_nm(root, running=True):
    write(root, "/usr/sbin/NetworkManager", "")
    write(root, "/etc/NetworkManager/NetworkManager.conf", fixture("NetworkManager.conf"))
    write(root, "/etc/NetworkManager/conf.d/10-lab-eth0.conf", "[keyfile]\nunmanaged-devices=interface-name:eth0\n")
    return Runner(
        {
            "systemctl is-active --quiet NetworkManager.service": (0 if running else 3, "", ""),
            "systemctl is-enabled --quiet NetworkManager.service": (0, "", ""),
            NMCLI: (0, fixture("nmcli-device-status.txt"), ""),
            NMCLI_CONNECTIONS: (0, fixture("nmcli-connection-show.txt"), ""),
        }
    )


def test_running_networkmanager_managing_the_nic_is_a_claim_naming_its_connection(root):
    runner = with_nm(root)
    (claim,) = claims(root, runner=runner)
    assert (claim.manager, claim.interface, claim.action) == ("NetworkManager", "eth1", "nm-unmanage")
    assert claim.source == "/run/NetworkManager/system-connections/Wired connection 1.nmconnection"
    assert "manages eth1 (state connecting (getting IP configuration), connection 'Wired connection 1'" in claim.message()
    assert "unmanaged-devices+=interface-name:eth1" in claim.message()


def test_devices_networkmanager_leaves_unmanaged_are_no_claims(root):
    runner = with_nm(root)
    runner.answers[NMCLI] = (0, "eth0:ethernet:unmanaged:\neth1:ethernet:unmanaged:\nlo:loopback:unmanaged:\n", "")
    assert claims(root, runner=runner) == []


def test_no_nmcli_runs_without_networkmanager(root):
    runner = Runner()
    claims(root, runner=runner)
    assert runner.commands == []


def test_enabled_networkmanager_that_is_not_running_claims_by_its_connection_files(root):
    runner = with_nm(root, running=False)
    write(root, "/etc/NetworkManager/system-connections/cluster.nmconnection", fixture("cluster.nmconnection"), 0o600)
    (claim,) = claims(root, runner=runner)
    assert claim.source == "/etc/NetworkManager/system-connections/cluster.nmconnection"
    assert "connection 'cluster' would configure eth1 when NetworkManager (enabled, not running) starts" in claim.message()
    # Our drop-in (or anyone's) keeping eth1 unmanaged ends the claim; '+=' adds to eth0's.
    write(root, "/etc/NetworkManager/conf.d/90-n3x-unmanaged.conf", "[keyfile]\nunmanaged-devices+=interface-name:eth1\n")
    assert claims(root, runner=runner) == []
    assert nc.nm_conf_value(nc.HostView(str(root)), "keyfile", "unmanaged-devices") == ["interface-name:eth0", "interface-name:eth1"]


def test_networkmanagers_auto_connection_applies_to_the_nic_it_was_made_for(root):
    sections = nc.parse_keyfile(fixture("wired-connection-1.nmconnection"))
    assert nc.nm_connection_applies(sections, {"name": "eth1", "type": "ether"})
    assert not nc.nm_connection_applies(sections, {"name": "eth2", "type": "ether"})
    any_ethernet = {"connection": {"type": "ethernet"}}
    assert nc.nm_connection_applies(any_ethernet, {"name": "eth2", "type": "ether"})
    assert not nc.nm_connection_applies({"connection": {"type": "ethernet", "autoconnect": "false"}}, {"name": "eth2", "type": "ether"})


def test_debian_networkmanager_leaves_ifupdown_interfaces_alone(root):
    runner = with_nm(root, running=False)
    write(root, "/etc/NetworkManager/system-connections/cluster.nmconnection", fixture("cluster.nmconnection"), 0o600)
    write(root, "/etc/network/interfaces", fixture("interfaces-netinst"))
    found = claims(root, runner=runner)
    # ifupdown is not installed: its file is inert, and NetworkManager's ifupdown plugin
    # (managed=false) leaves eth1 alone because the file configures it.
    assert found == []


@pytest.mark.parametrize(
    ("specs", "name", "expected"),
    [
        (["interface-name:eth1"], "eth1", True),
        (["interface-name:eth*", "except:interface-name:eth0"], "eth0", False),
        (["except:interface-name:eth0"], "eth1", True),
        (["*"], "eth1", True),
        (["interface-name:=eth*"], "eth1", False),
        (["mac:52:54:00:AA:01:01"], "eth1", True),
        (["eth1"], "eth1", True),
        (["type:ethernet"], "eth1", False),
    ],
)
def test_networkmanager_device_list_format(specs, name, expected):
    assert nc.nm_spec_matches(specs, {"name": name, "mac": "52:54:00:aa:01:01"}) is expected


def test_nmcli_terse_fields_unescape():
    assert nc.nmcli_split(r"Wired connection 1:/run/NetworkManager/a\:b.nmconnection") == ["Wired connection 1", "/run/NetworkManager/a:b.nmconnection"]


# ------------------------------------------------------------------ ifupdown ------------


def with_ifupdown(root, text=None):
    write(root, "/sbin/ifup", "")
    write(root, "/etc/network/interfaces", text or fixture("interfaces-netinst"))


def test_netinst_interfaces_claim_the_nic_with_its_lines(root):
    with_ifupdown(root)
    (claim,) = claims(root)
    assert (claim.manager, claim.interface, claim.source, claim.action) == ("ifupdown", "eth1", "/etc/network/interfaces", "ifupdown")
    assert claim.details["lines"] == [[11, 11], [12, 12]]
    assert "line 11: allow-hotplug eth1; line 12: iface eth1 inet dhcp" in claim.message()


def test_ifupdown_state_says_the_nic_is_up(root):
    with_ifupdown(root)
    write(root, "/run/network/ifstate", "lo=lo\neth1=eth1\n")
    (claim,) = claims(root)
    assert claim.details["up"] is True
    assert "ifupdown has it up now" in claim.message()


def test_source_and_source_directory_are_followed_as_interfaces_5_says(root):
    with_ifupdown(root, "auto lo\niface lo inet loopback\nsource-directory interfaces.d\nsource extra/*.cfg\n")
    write(root, "/etc/network/interfaces.d/eth1", "auto eth1\niface eth1 inet static\n    address 10.0.0.1/24\n")
    # source-directory reads only names of [a-zA-Z0-9_-]+: a .cfg or a backup~ is skipped.
    write(root, "/etc/network/interfaces.d/eth1.100.cfg", "iface eth1.100 inet manual\n")
    write(root, "/etc/network/interfaces.d/eth1~", "iface eth1.200 inet manual\n")
    write(root, "/etc/network/extra/vlan.cfg", "auto eth1.200\niface eth1.200 inet manual\n  vlan-raw-device eth1\n")
    found = summary(claims(root))
    assert found == [
        ("ifupdown", "eth1", "/etc/network/interfaces.d/eth1", "ifupdown"),
        ("ifupdown", "eth1.200", "/etc/network/extra/vlan.cfg", "ifupdown"),
    ]


def test_patterns_and_mappings_are_claims_only_by_hand(root):
    with_ifupdown(root, "auto /eth*\nmapping eth1\n  script /usr/local/bin/map\niface eth inet dhcp\n")
    found = {c.interface: c for c in claims(root)}
    assert set(found) == {"eth1", "eth1.100", "eth1.200"}
    assert found["eth1"].action is None
    assert "networkd_take_over does not rewrite mappings, renames or patterns" in found["eth1"].message()


def test_ifupdown_is_inert_when_not_installed(root):
    write(root, "/etc/network/interfaces", fixture("interfaces-netinst"))
    assert claims(root) == []


def test_interfaces_parser_keeps_stanza_lines_and_continuations():
    text = "auto lo eth1\n\niface eth1 inet static\n  address 10.0.0.1/24 \\\n\n  # note\n  gateway 10.0.0.254\nallow-hotplug eth2\n"
    stanzas = nc.parse_interfaces(text, "/etc/network/interfaces")
    assert [(s.kind, s.names, s.first, s.last) for s in stanzas] == [
        ("auto", ["lo", "eth1"], 1, 1),
        ("iface", ["eth1"], 3, 7),
        ("allow-hotplug", ["eth2"], 8, 8),
    ]


def test_include_loops_end(root):
    with_ifupdown(root, "source /etc/network/interfaces\nsource-directory /etc/network/interfaces.d\n")
    write(root, "/etc/network/interfaces.d/loop", "source /etc/network/interfaces.d/loop\niface eth1 inet manual\n")
    assert summary(claims(root)) == [("ifupdown", "eth1", "/etc/network/interfaces.d/loop", "ifupdown")]


# ------------------------------------------------------------------ DHCP clients --------

# dhclient as ifupdown 0.8.41 starts it for `iface eth1 inet dhcp` (ps in the lab VM).
IFUPDOWN_DHCLIENT = [
    "dhclient",
    "-4",
    "-v",
    "-i",
    "-pf",
    "/run/dhclient.eth1.pid",
    "-lf",
    "/var/lib/dhcp/dhclient.eth1.leases",
    "-I",
    "-df",
    "/var/lib/dhcp/dhclient6.eth1.leases",
    "eth1",
]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([IFUPDOWN_DHCLIENT[0], "-1", *IFUPDOWN_DHCLIENT[1:]], ("dhclient", ["eth1"])),
        (IFUPDOWN_DHCLIENT, ("dhclient", ["eth1"])),
        (["/sbin/dhclient"], ("dhclient", None)),
        (["dhcpcd: [manager] [ip4] [ip6]"], ("dhcpcd", None)),
        (["dhcpcd: eth1 [ip4]"], ("dhcpcd", ["eth1"])),
        (["dhcpcd: [BPF ARP] eth1 192.0.2.10"], ("dhcpcd", ["eth1"])),
        (["dhcpcd", "-q", "-b", "-h", "node", "eth1", "eth2"], ("dhcpcd", ["eth1", "eth2"])),
        (["udhcpc", "-b"], ("udhcpc", ["eth0"])),
        (["busybox", "udhcpc", "-i", "eth1", "-q"], ("udhcpc", ["eth1"])),
        (["/sbin/udhcpc", "--interface=eth2"], ("udhcpc", ["eth2"])),
        (["sshd: root@notty"], None),
        (["/usr/sbin/NetworkManager", "--no-daemon"], None),
    ],
)
def test_dhcp_client_command_lines(argv, expected):
    assert nc.dhcp_client_interfaces(argv) == expected


def test_dhcp_clients_on_the_nic_by_owner(root):
    # ifupdown 0.8.41 (no -1): dhclient forks, both processes stay in ifup@eth1.service.
    dhclient = IFUPDOWN_DHCLIENT
    process(root, 197, dhclient, "/system.slice/ifup@eth1.service")
    process(root, 199, dhclient, "/system.slice/ifup@eth1.service")
    process(root, 196, ["/bin/sh", "-c", 'CLIENT="-i";  dhclient -4 -v $CLIENT eth1'], "/system.slice/ifup@eth1.service")
    process(root, 500, ["busybox", "udhcpc", "-i", "eth1"], "/user.slice/user-0.slice/session-3.scope")
    process(root, 600, ["dhcpcd: [manager] [ip4] [ip6]"], "/system.slice/dhcpcd.service")
    process(root, 700, ["dhcpcd", "eth1.100"], "/system.slice/system-dhcpcd.slice/dhcpcd@eth1.100.service")
    process(root, 800, ["dhclient", "eth0"], "/system.slice/dhclient-eth0.service")
    write(root, "/proc/900/cmdline", "")
    # Without logind (the lab image), a client started over SSH sits in sshd's service.
    process(root, 950, ["udhcpc", "-i", "eth1.200"], "/system.slice/n3x-sshd.service")
    runner = Runner(
        {
            "systemctl show --property=MainPID --value dhcpcd@eth1.100.service": (0, "700\n", ""),
            "systemctl show --property=MainPID --value n3x-sshd.service": (0, "321\n", ""),
        }
    )
    found = {(c.details["pids"][0], c.interface): c for c in claims(root, runner=runner)}
    assert found[197, "eth1"].action == "stop-dhcp"
    assert found[197, "eth1"].details["pids"] == [197, 199]
    assert "eth1: DHCP client: pids 197, 199: dhclient (pids 197, 199, ifup@eth1.service) runs on eth1; ifupdown started it" in found[197, "eth1"].message()
    assert found[500, "eth1"].action == "stop-dhcp"
    # A client on every interface would be stopped on eth0 too; one with a unit of its own
    # would come back at boot: both are for the admin.
    assert found[600, "eth1"].action is None
    assert "runs on every interface" in found[600, "eth1"].message()
    assert found[700, "eth1.100"].action is None
    assert "systemctl disable --now dhcpcd@eth1.100.service" in found[700, "eth1.100"].message()
    assert found[950, "eth1.200"].action == "stop-dhcp"
    assert not any(pid == 800 for pid, _name in found)


# ------------------------------------------------------------------ the connection ------


def test_the_connection_interface_from_sshd_sockets(tmp_path):
    write(tmp_path, "/proc/net/tcp", fixture("proc-net-tcp.txt"))
    write(tmp_path, "/proc/net/tcp6", "  sl  local_address remote_address st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")
    write(tmp_path, "/proc/4242/status", "Name:\tpython3\nPPid:\t4200\n")
    write(tmp_path, "/proc/4200/status", "Name:\tsudo\nPPid:\t4100\n")
    write(tmp_path, "/proc/4100/status", "Name:\tsshd\nPPid:\t700\n")
    symlink(tmp_path, "/proc/4100/fd/3", "socket:[23456]")
    symlink(tmp_path, "/proc/4100/fd/4", "pipe:[111]")
    ip = json.dumps([{"ifname": "lo", "addr_info": [{"local": "127.0.0.1"}]}, {"ifname": "eth0", "addr_info": [{"local": "10.0.2.15"}]}])
    host = nc.HostView(str(tmp_path), Runner({"ip -j addr show": (0, ip, "")}))
    assert nc.connection_addresses(host, 4242) == {"10.0.2.15"}
    assert nc.connection_interfaces(host, 4242) == ["eth0"]
    assert nc.connection_interfaces(host, 4242, "10.0.2.2 51234 10.0.2.15 22") == ["eth0"]
    assert nc.connection_interfaces(nc.HostView(str(tmp_path / "none")), 1) == []


def test_ipv6_socket_addresses_decode():
    text = (
        "  sl  local_address ...\n"
        "   0: 0000000000000000FFFF00000F02000A:0016 0000000000000000FFFF00000202000A:C8E2 01 00000000:00000000 00:00000000 00000000     0        0 777 1\n"
    )
    assert nc.parse_proc_net_tcp(text, ipv6=True) == {"777": "10.0.2.15"}


# ------------------------------------------------------------------ hostile input -------


def test_a_huge_config_file_is_not_read(root):
    with_ifupdown(root, "#" * (nc.MAX_FILE_BYTES + 10))
    with pytest.raises(nc.ClaimError, match="/etc/network/interfaces: over"):
        claims(root)


def test_a_bond_profile_claims_members_and_bond(root):
    nic(root, "eth2", "52:54:00:aa:02:01", 4)
    write(root, "/run/systemd/network/05-eth.network", "[Match]\nName=eth1 eth2\n")
    found = claims(root, files=node_files("bonding-vlans"))
    assert {c.interface for c in found} == {"eth1", "eth2"}
    profile = validate_profile({"ip_addresses": {"a": {"cluster": "10.1.0.1"}}, "interfaces": {"cluster": "eth1"}, "server_api": "https://10.1.0.1:6443"})
    assert {c.interface for c in claims(root, files=networkd_files(profile, "a"))} == {"eth1"}
