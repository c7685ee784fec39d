"""The networkd role's one step on the node: install, apply only on change, always wait.

The commands go to a recording runner; what they do to a real networkd is proven in VMs
by the L2 scenarios (molecule/l2-*, bond-failover, vlan-negative).
"""

import pathlib

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_networkd_apply as nap
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import GENERATED_MARKER
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_networkd import networkd_files
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import load_profile

PROFILES = pathlib.Path(__file__).resolve().parents[2] / "profiles"
WAIT = ["eth1:carrier", "eth1.200:routable", "eth1.100:routable"]


class Node:
    """Records commands; answers each with the rc given for its first words."""

    def __init__(self, rcs=None, outputs=None):
        self.commands, self.rcs, self.outputs = [], rcs or {}, outputs or {}

    def __call__(self, argv):
        self.commands.append(" ".join(argv))
        for prefix, rc in self.rcs.items():
            if " ".join(argv).startswith(prefix):
                return rc, self.outputs.get(prefix, ""), f"{prefix}: error"
        return 0, "", ""


def vlan_files(root, profile="vlans"):
    loaded = load_profile(profile, str(PROFILES))[1]
    return networkd_files(loaded, "server-1", unit_dir=f"{root}/etc/systemd/network", modules_dir=f"{root}/etc/modules-load.d")


def converge(files, node, **kw):
    kw.setdefault("unit_dir", str(files[0]["path"]).rsplit("/", 1)[0])
    kw.setdefault("state_dir", str(files[0]["path"]).split("/etc/", 1)[0] + "/run/n3x")
    kw.setdefault("kernel_modules", ["8021q"])
    kw.setdefault("reconfigure", ["eth1"])
    kw.setdefault("wait_for", WAIT)
    return nap.converge(files, node, dest="/", **kw)


def test_first_run_installs_applies_and_waits(tmp_path):
    node = Node(rcs={"systemctl is-enabled": 1})
    result = converge(vlan_files(tmp_path), node)
    assert result["changed"]
    assert not result.get("failed")
    assert (tmp_path / "etc/systemd/network/30-n3x-eth1.200.netdev").read_text().startswith(GENERATED_MARKER)
    assert result["recreated"] == ["eth1.100", "eth1.200"]
    assert node.commands == [
        "systemctl is-enabled --quiet systemd-networkd.service",
        "modprobe -a 8021q",
        "ip link delete eth1.100",
        "ip link delete eth1.200",
        "systemctl enable systemd-networkd.service",
        "systemctl start systemd-networkd.service",
        # eth1's .network is new: the reload configures it, and it is not configured again.
        "networkctl reload",
        "/lib/systemd/systemd-networkd-wait-online --timeout=60 --interface=eth1:carrier --interface=eth1.200:routable --interface=eth1.100:routable",
    ]
    assert result["commands"] == node.commands[1:-1]


def test_second_run_changes_nothing_and_only_waits(tmp_path):
    files = vlan_files(tmp_path)
    converge(files, Node())
    node = Node()
    result = converge(files, node)
    assert not result["changed"]
    assert result["written"] == result["removed"] == result["recreated"] == result["commands"] == []
    assert node.commands == [" ".join(nap.wait_argv(WAIT, 60))]


def test_enabled_networkd_is_not_enabled_again(tmp_path):
    node = Node()
    converge(vlan_files(tmp_path), node)
    assert "systemctl enable systemd-networkd.service" not in node.commands


def test_only_changed_netdevs_are_recreated_and_stale_units_go(tmp_path):
    converge(vlan_files(tmp_path), Node())
    # A flat profile drops both VLAN devices: their units go and the devices are deleted.
    files = vlan_files(tmp_path, "simple")
    hand_written = tmp_path / "etc/systemd/network/99-mine.network"
    hand_written.write_text("[Match]\nName=eth9\n")
    node = Node()
    result = converge(files, node, kernel_modules=[], wait_for=["eth1:routable"])
    assert result["recreated"] == ["eth1.100", "eth1.200"]
    removed = sorted(p.rsplit("/", 1)[1] for p in result["removed"])
    assert removed == [f"30-n3x-eth1.{vlan}.{kind}" for vlan in (100, 200) for kind in ("netdev", "network")]
    assert hand_written.exists()
    assert not any(c.startswith("modprobe") for c in node.commands)


def test_a_failing_step_stops_with_the_command_and_its_error(tmp_path):
    node = Node(rcs={"networkctl reload": 1})
    result = converge(vlan_files(tmp_path), node)
    assert result["failed"]
    assert result["msg"] == "networkctl reload failed (rc 1): networkctl reload: error"
    assert not any("wait-online" in c for c in node.commands)


def test_deleting_a_device_that_is_not_there_is_fine(tmp_path):
    result = converge(vlan_files(tmp_path), Node(rcs={"ip link delete": 1}))
    assert not result.get("failed")


def test_interfaces_that_do_not_come_up_fail_with_their_status(tmp_path):
    node = Node(rcs={"/lib/systemd/systemd-networkd-wait-online": 1}, outputs={"networkctl --no-pager": "eth1.200: no-carrier"})
    node.rcs["networkctl --no-pager"] = 0
    result = converge(vlan_files(tmp_path), node, wait_timeout=5)
    assert result["failed"]
    assert result["msg"] == "not configured within 5 s: eth1:carrier, eth1.200:routable, eth1.100:routable\neth1.200: no-carrier"
    assert node.commands[-1] == "networkctl --no-pager --lines=20 status eth1 eth1.200 eth1.100"


def test_check_mode_reports_and_touches_nothing(tmp_path):
    node = Node()
    result = converge(vlan_files(tmp_path), node, check_mode=True, diff=True)
    assert result["changed"]
    assert node.commands == []
    assert not (tmp_path / "etc").exists()
    diff = {d["prepared"].splitlines()[1].rsplit("/", 1)[1]: d["prepared"] for d in result["diff"]}
    assert "\n+Id=200\n" in diff["30-n3x-eth1.200.netdev"]
    assert diff["30-n3x-eth1.200.netdev"].startswith("--- before: ")


def test_diff_shows_only_files_that_change(tmp_path):
    files = vlan_files(tmp_path)
    converge(files, Node())
    assert converge(files, Node(), diff=True)["diff"] == []


@pytest.mark.parametrize(
    ("paths", "devices"),
    [
        (["etc/systemd/network/10-n3x-bond0.netdev", "etc/systemd/network/10-n3x-bond0.network"], ["bond0"]),
        (["etc/modules-load.d/n3x-network.conf"], []),
        (["etc/systemd/network/30-other-eth1.200.netdev"], []),
    ],
)
def test_recreated_devices_come_from_n3x_netdev_names(paths, devices):
    assert nap.recreated_devices(paths) == devices


def test_a_dhcp_link_is_configured_once(tmp_path):
    # A second configuration right after the reload restarts the DHCP client, and networkd 252
    # could then lose the address of the lease it acquires again (l2-dhcp-simple, 1 run in 7).
    loaded = load_profile("dhcp-simple", str(PROFILES))[1]
    files = networkd_files(loaded, "server-1", unit_dir=f"{tmp_path}/etc/systemd/network", modules_dir=f"{tmp_path}/etc/modules-load.d")
    node = Node()
    converge(files, node, kernel_modules=[], wait_for=["eth1:routable"])
    assert "networkctl reload" in node.commands
    assert not any(c.startswith("networkctl reconfigure") for c in node.commands)


def test_links_the_reload_leaves_alone_are_reconfigured(tmp_path):
    files = vlan_files(tmp_path)
    converge(files, Node())
    # Only a VLAN's .netdev changes: the device is made again, and its parent eth1, whose
    # .network is unchanged, must be configured again to create it.
    netdev = tmp_path / "etc/systemd/network/30-n3x-eth1.200.netdev"
    netdev.write_text(netdev.read_text().replace("Id=200", "Id=999"))
    node = Node()
    result = converge(files, node)
    assert result["recreated"] == ["eth1.200"]
    assert node.commands[-2:] == ["networkctl reconfigure eth1", " ".join(nap.wait_argv(WAIT, 60))]


@pytest.mark.parametrize(
    ("reconfigure", "paths", "again"),
    [
        (["eth1"], ["etc/systemd/network/20-n3x-eth1.network"], []),
        (["eth1", "eth2"], ["etc/systemd/network/10-n3x-bond0.netdev"], ["eth1", "eth2"]),
        (["eth1", "eth2"], ["etc/systemd/network/10-n3x-bond0.netdev", "etc/systemd/network/10-n3x-eth2.network"], ["eth1"]),
        (["eth1"], ["etc/systemd/network/30-n3x-eth1.200.network"], ["eth1"]),
    ],
)
def test_only_links_whose_network_is_unchanged_are_reconfigured(reconfigure, paths, again):
    assert nap.to_reconfigure(reconfigure, paths) == again


def test_other_n3x_files_beside_the_module_list_are_kept(tmp_path):
    # kernel_settings writes n3x-k3s.conf next to n3x-network.conf; pruning it would make
    # every converge rewrite both and reload networkd (found by k3s-prepare's idempotence).
    files = vlan_files(tmp_path)
    converge(files, Node())
    k3s_modules = tmp_path / "etc/modules-load.d/n3x-k3s.conf"
    k3s_modules.write_text(f"{GENERATED_MARKER} (n3x-k3s)\nbr_netfilter\n")
    node = Node()
    result = converge(files, node)
    assert not result["changed"]
    assert k3s_modules.exists()
    assert node.commands == [" ".join(nap.wait_argv(WAIT, 60))]


class Interrupt(Node):
    """A node whose run is interrupted (Ctrl-C, lost connection) at the first command starting so."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def __call__(self, argv):
        if " ".join(argv).startswith(self.at):
            raise KeyboardInterrupt
        return super().__call__(argv)


@pytest.mark.parametrize("at", ["modprobe", "ip link delete eth1.200", "networkctl reload"])
def test_a_run_interrupted_before_networkd_took_the_units_is_resumed(tmp_path, at):
    files = vlan_files(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        converge(files, Interrupt(at))
    assert (tmp_path / "run/n3x" / nap.PENDING_MARKER).exists()
    # The units are in place now, so nothing changes on disk; the apply must still happen.
    node = Node()
    result = converge(files, node)
    assert result["changed"]
    assert result["resumed"]
    assert result["written"] == []
    assert result["recreated"] == ["eth1.100", "eth1.200"]
    assert "networkctl reload" in node.commands
    assert not (tmp_path / "run/n3x" / nap.PENDING_MARKER).exists()
    assert not converge(files, Node())["changed"]


def test_a_failed_apply_is_tried_again_by_the_next_run(tmp_path):
    files = vlan_files(tmp_path)
    assert converge(files, Node(rcs={"networkctl reload": 1}))["failed"]
    node = Node()
    result = converge(files, node)
    assert result["resumed"]
    assert not result.get("failed")
    assert "networkctl reload" in node.commands


def test_check_mode_reports_a_pending_apply_and_keeps_it(tmp_path):
    files = vlan_files(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        converge(files, Interrupt("networkctl reload"))
    node = Node()
    assert converge(files, node, check_mode=True)["changed"]
    assert node.commands == []
    assert (tmp_path / "run/n3x" / nap.PENDING_MARKER).exists()
