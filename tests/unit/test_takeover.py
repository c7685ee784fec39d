"""networkd_apply with other managers on the node: refuse, take over, give back (issue 17).

Node trees under tmp_path stand for the node's / (takeover_hosts.py); the commands go to a
recording Runner. That netplan, NetworkManager and ifupdown then really let go (and take
the interfaces back) is proven in the VMs of molecule/network-takeover.
"""

import os

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_networkd_apply as nap

from .takeover_hosts import Runner, fixture, lab_nics, process, snapshot, write
from .test_network_claims import NMCLI, NMCLI_CONNECTIONS, node_files

STATE = "/var/lib/n3x/networkd-takeover"
WAIT = ["eth1:carrier", "eth1.200:routable", "eth1.100:routable"]


def files_under(root, profile="vlans"):
    return [{**item, "path": f"{root}{item['path']}"} for item in node_files(profile)]


def run_converge(root, runner, **kw):
    kw.setdefault("wait_for", WAIT)
    return nap.converge(
        files_under(root),
        runner,
        kernel_modules=["8021q"],
        reconfigure=["eth1"],
        unit_dir=f"{root}/etc/systemd/network",
        dest=str(root),
        sleep=lambda _s: None,
        **kw,
    )


def run_give_back(root, runner, **kw):
    return nap.give_back(files_under(root), runner, unit_dir=f"{root}/etc/systemd/network", dest=str(root), **kw)


@pytest.fixture
def node(tmp_path):
    lab_nics(tmp_path)
    write(tmp_path, "/etc/systemd/network/10-eth0-mgmt.network", "[Match]\nName=eth0\n\n[Network]\nAddress=10.0.2.15/24\n")
    return tmp_path


def netplan_node(root):
    write(root, "/usr/sbin/netplan", "")
    write(root, "/etc/netplan/50-cloud-init.yaml", fixture("netplan-50-cloud-init.yaml"), 0o600)
    write(root, "/run/systemd/network/10-netplan-eth0.network", fixture("10-netplan-eth0.network"))
    write(root, "/run/systemd/network/10-netplan-eth1.network", fixture("10-netplan-eth1.network"))


def ifupdown_node(root):
    write(root, "/sbin/ifup", "")
    write(root, "/etc/network/interfaces", fixture("interfaces-netinst"))
    process(root, 412, ["dhclient", "-1", "-4", "-v", "-i", "-pf", "/run/dhclient.eth1.pid", "eth1"], "/system.slice/ifup@eth1.service")


def nm_runner(root):
    write(root, "/usr/sbin/NetworkManager", "")
    write(root, "/etc/NetworkManager/NetworkManager.conf", fixture("NetworkManager.conf"))
    write(root, "/etc/NetworkManager/conf.d/10-lab-eth0.conf", "[keyfile]\nunmanaged-devices=interface-name:eth0\n")
    return Runner(
        {
            "systemctl is-active --quiet NetworkManager.service": (0, "", ""),
            "systemctl is-enabled --quiet NetworkManager.service": (0, "", ""),
            NMCLI: (0, fixture("nmcli-device-status.txt"), ""),
            NMCLI_CONNECTIONS: (0, fixture("nmcli-connection-show.txt"), ""),
        }
    )


# ------------------------------------------------------------------ refusal -------------


@pytest.mark.parametrize("check_mode", [False, True])
def test_default_refuses_with_one_message_per_claim_and_changes_nothing(node, check_mode):
    netplan_node(node)
    ifupdown_node(node)
    before = snapshot(node)
    runner = Runner()
    result = run_converge(node, runner, check_mode=check_mode, diff=True)
    assert result["failed"]
    lines = result["msg"].splitlines()
    assert lines[0].startswith("other network managers claim the profile's interfaces (3); nothing was changed")
    assert [line.split(":")[0:3] for line in lines[1:]] == [
        ["- eth1", " netplan", " /etc/netplan/50-cloud-init.yaml"],
        ["- eth1", " ifupdown", " /etc/network/interfaces"],
        ["- eth1", " DHCP client", " pid 412"],
    ]
    assert snapshot(node) == before
    assert not any(c.startswith(("networkctl", "netplan", "ifdown", "kill", "systemctl stop")) for c in runner.commands)
    assert [c["manager"] for c in result["conflicts"]] == ["netplan", "ifupdown", "DHCP client"]


def test_the_connection_interface_is_named_in_the_refusal(node):
    netplan_node(node)
    result = run_converge(node, Runner(), connected=["eth1"])
    assert result["failed"]
    assert "eth1: it carries this Ansible connection; taking it over would also need networkd_take_over_connection: true" in result["msg"]


def test_take_over_of_the_connection_interface_needs_its_own_consent(node):
    netplan_node(node)
    before = snapshot(node)
    result = run_converge(node, Runner(), take_over=True, connected=["eth1"])
    assert result["failed"]
    assert "Ansible is connected through eth1, which the profile names and another manager claims" in result["msg"]
    assert "networkd_take_over_connection: true" in result["msg"]
    assert snapshot(node) == before
    result = run_converge(node, Runner(), take_over=True, take_over_connection=True, connected=["eth1"])
    assert not result.get("failed"), result.get("msg")
    assert result["warnings"] == ["eth1: taking over the interface Ansible is connected through (networkd_take_over_connection); the connection may drop"]


def test_claims_take_over_cannot_handle_are_refused_even_with_it(node):
    write(node, "/usr/lib/systemd/network/05-all.network", "[Match]\nName=eth*\n")
    before = snapshot(node)
    result = run_converge(node, Runner(), take_over=True)
    assert result["failed"]
    assert result["msg"].startswith("3 problem(s) with other network managers on this node; nothing was changed")
    assert snapshot(node) == before


# ------------------------------------------------------------------ take-over -----------


def test_netplan_take_over_rewrites_without_the_nic_keeps_eth0_and_records_it(node):
    netplan_node(node)
    runner = Runner()
    result = run_converge(node, runner, take_over=True)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"]
    assert result["taken_over"] == ["back up and rewrite /etc/netplan/50-cloud-init.yaml without ethernets.eth1 (netplan)", "netplan generate"]
    rewritten = (node / "etc/netplan/50-cloud-init.yaml").read_text()
    assert rewritten.startswith(
        f"# n3x.cluster (networkd_take_over) took eth1 over from this file; the original is {STATE}/backup/etc/netplan/50-cloud-init.yaml.\n"
    )
    assert "eth0:" in rewritten
    assert "eth1" not in rewritten.split("\n", 1)[1]
    assert oct(os.stat(node / "etc/netplan/50-cloud-init.yaml").st_mode & 0o777) == "0o600"
    backup = node / f"{STATE.lstrip('/')}/backup/etc/netplan/50-cloud-init.yaml"
    assert backup.read_text() == fixture("netplan-50-cloud-init.yaml")
    assert oct(os.stat(node / STATE.lstrip("/")).st_mode & 0o777) == "0o700"
    assert runner.commands.index("netplan generate") < runner.commands.index("networkctl reload")
    # eth1's .network is new, so the reload itself configures it (networkd 252 manager_reload
    # re-matches every link); a reconfigure after it would restart its DHCP client.
    assert "networkctl reload" in runner.commands
    assert not any(command.startswith("networkctl reconfigure") for command in runner.commands)


def test_netplan_file_with_only_the_nic_is_moved_aside(node):
    netplan_node(node)
    (node / "etc/netplan/50-cloud-init.yaml").write_text("network:\n  version: 2\n  ethernets:\n    eth1:\n      dhcp4: true\n")
    result = run_converge(node, Runner(), take_over=True, diff=True)
    assert result["taken_over"][0] == "back up and move aside /etc/netplan/50-cloud-init.yaml (netplan)"
    assert not (node / "etc/netplan/50-cloud-init.yaml").exists()
    # A netplan file is 0600 (it may hold Wi-Fi keys): its text is not shown, as n3x_files does.
    assert result["diff"][0]["prepared"].startswith(
        "/etc/netplan/50-cloud-init.yaml (netplan: move, kept in /var/lib/n3x/networkd-takeover/backup)\n"
        f"{node}/etc/netplan/50-cloud-init.yaml: changes (others may not read it: its text is not shown)\n"
    )


def test_ifupdown_take_over_brings_the_nic_down_first_then_comments_its_stanza(node):
    ifupdown_node(node)
    runner = Runner({"systemctl is-active ifup@eth1.service": (0, "activating\n", "")})

    def stop(argv):
        line = " ".join(argv)
        if line == "systemctl stop ifup@eth1.service":
            # Stopping the unit ends its dhclient (its cgroup) and runs ifdown.
            (node / "proc/412/cmdline").unlink()
            runner.answers["systemctl is-active ifup@eth1.service"] = (3, "inactive\n", "")
        return runner(argv)

    result = run_converge(node, stop, take_over=True)
    assert not result.get("failed"), result.get("msg")
    assert result["taken_over"] == ["ifdown eth1 (ifupdown)", "back up and rewrite /etc/network/interfaces without eth1 (ifupdown)", "stop DHCP client pid 412"]
    assert runner.commands.index("systemctl stop ifup@eth1.service") < runner.commands.index("networkctl reload")
    assert not any(c.startswith("kill") for c in runner.commands)
    text = (node / "etc/network/interfaces").read_text()
    assert "#n3x# allow-hotplug eth1\n#n3x# iface eth1 inet dhcp\n" in text
    assert "auto lo\niface lo inet loopback\n" in text


def test_auto_line_with_several_interfaces_keeps_the_others(node):
    write(node, "/sbin/ifup", "")
    write(node, "/etc/network/interfaces", "auto lo eth1 eth0\niface lo inet loopback\niface eth1 inet static\n  address 10.9.0.1/24\n")
    result = run_converge(node, Runner(), take_over=True)
    assert not result.get("failed"), result.get("msg")
    assert (node / "etc/network/interfaces").read_text() == (
        "#n3x# n3x.cluster (networkd_take_over) took eth1 over; the original is /var/lib/n3x/networkd-takeover/backup/etc/network/interfaces:\n"
        "#n3x# auto lo eth1 eth0\n"
        "auto lo eth0\n"
        "iface lo inet loopback\n"
        "#n3x# n3x.cluster (networkd_take_over) took eth1 over; the original is /var/lib/n3x/networkd-takeover/backup/etc/network/interfaces:\n"
        "#n3x# iface eth1 inet static\n"
        "#n3x#   address 10.9.0.1/24\n"
    )


def test_a_stray_dhcp_client_is_stopped(node):
    process(node, 500, ["busybox", "udhcpc", "-i", "eth1"], "/user.slice/user-0.slice/session-3.scope")

    def kill(argv):
        if argv[:2] == ["kill", "-TERM"]:
            (node / f"proc/{argv[2]}/cmdline").unlink()
        return 0, "", ""

    runner = Runner()
    result = run_converge(node, lambda argv: (runner(argv), kill(argv))[1], take_over=True)
    assert not result.get("failed"), result.get("msg")
    assert "kill -TERM 500" in runner.commands


def test_a_dhcp_client_that_ignores_sigterm_fails_the_take_over(node):
    process(node, 500, ["udhcpc", "-i", "eth1"], "/user.slice/user-0.slice/session-3.scope")
    clock = iter(range(100)).__next__
    result = nap.converge(
        files_under(node),
        Runner(),
        unit_dir=f"{node}/etc/systemd/network",
        dest=str(node),
        take_over=True,
        clock=clock,
        sleep=lambda _s: None,
    )
    assert result["failed"]
    assert "DHCP client still running 5 s after SIGTERM: 500" in result["msg"]


def test_networkmanager_take_over_writes_one_drop_in_for_every_profile_interface(node):
    runner = nm_runner(node)
    result = run_converge(node, runner, take_over=True)
    assert not result.get("failed"), result.get("msg")
    dropin = (node / "etc/NetworkManager/conf.d/90-n3x-unmanaged.conf").read_text()
    assert "[keyfile]\nunmanaged-devices+=interface-name:eth1;interface-name:eth1.100;interface-name:eth1.200\n" in dropin
    assert runner.commands.index("nmcli general reload conf") < runner.commands.index("networkctl reload")


def test_earlier_networkd_files_are_moved_from_etc_and_masked_elsewhere(node):
    write(node, "/etc/systemd/network/05-eth1.network", "[Match]\nName=eth1\n")
    write(node, "/run/systemd/network/06-eth1.network", "[Match]\nName=eth1\n")
    result = run_converge(node, Runner(), take_over=True)
    assert not result.get("failed"), result.get("msg")
    assert not (node / "etc/systemd/network/05-eth1.network").exists()
    assert os.readlink(node / "etc/systemd/network/06-eth1.network") == "/dev/null"
    assert (node / "run/systemd/network/06-eth1.network").exists()


def test_second_converge_after_take_over_changes_nothing(node):
    netplan_node(node)
    ifupdown_node(node)
    (node / "proc/412/cmdline").unlink()
    runner = nm_runner(node)
    assert not run_converge(node, runner, take_over=True).get("failed")
    # What the managers do on the node after the take-over: netplan renders no eth1 file,
    # NetworkManager shows eth1 unmanaged.
    (node / "run/systemd/network/10-netplan-eth1.network").unlink()
    runner.answers[NMCLI] = (
        0,
        "eth0:ethernet:unmanaged:\neth1:ethernet:unmanaged:\neth1.100:vlan:unmanaged:\neth1.200:vlan:unmanaged:\nlo:loopback:unmanaged:\n",
        "",
    )
    before = snapshot(node)
    runner.commands.clear()
    result = run_converge(node, runner, take_over=True)
    assert not result["changed"]
    assert result["conflicts"] == []
    assert result["taken_over"] == []
    assert snapshot(node) == before
    assert not any(c.startswith(("networkctl", "netplan", "nmcli general")) for c in runner.commands)


def test_check_mode_with_take_over_shows_every_change_and_makes_none(node):
    netplan_node(node)
    ifupdown_node(node)
    runner = nm_runner(node)
    before = snapshot(node)
    result = run_converge(node, runner, take_over=True, check_mode=True, diff=True)
    assert result["changed"]
    assert snapshot(node) == before
    prepared = [d["prepared"] for d in result["diff"]]
    assert [p.split("\n", 1)[0] for p in prepared[:3]] == [
        "/etc/NetworkManager/conf.d/90-n3x-unmanaged.conf (NetworkManager: create)",
        "/etc/netplan/50-cloud-init.yaml (netplan: rewrite)",
        "/etc/network/interfaces (ifupdown: rewrite)",
    ]
    assert "+unmanaged-devices+=interface-name:eth1;interface-name:eth1.100;interface-name:eth1.200\n" in prepared[0]
    assert "-allow-hotplug eth1\n-iface eth1 inet dhcp\n" in prepared[2]
    assert "+#n3x# allow-hotplug eth1\n" in prepared[2]
    assert any("after: " in p and p.split("\n", 1)[0].endswith("20-n3x-eth1.network") for p in prepared)
    assert len(result["conflicts"]) == 4
    assert not any(c.startswith(("networkctl", "netplan", "ifdown", "kill", "systemctl stop", "nmcli general")) for c in runner.commands)


# ------------------------------------------------------------------ give-back -----------


def test_give_back_restores_every_original_byte_for_byte_and_removes_ours(node):
    netplan_node(node)
    ifupdown_node(node)
    (node / "proc/412/cmdline").unlink()
    write(node, "/run/systemd/network/06-eth1.network", "[Match]\nName=eth1\n")
    runner = nm_runner(node)
    before = snapshot(node)
    assert not run_converge(node, runner, take_over=True).get("failed")
    runner.commands.clear()
    result = run_give_back(node, runner, diff=True)
    assert not result.get("failed"), result.get("msg")
    assert result["given_back"] == ["NetworkManager", "ifupdown", "netplan", "systemd-networkd"]
    after = snapshot(node)
    assert after == before
    assert not (node / STATE.lstrip("/")).exists()
    assert "netplan generate" in runner.commands
    assert "ip link delete eth1.100" in runner.commands
    assert "ip address flush dev eth1 scope global" in runner.commands
    assert "networkctl reload" in runner.commands
    assert "nmcli general reload conf" in runner.commands
    assert "systemctl --no-block start ifup@eth1.service" in runner.commands
    # Nothing left to give back: a second run changes nothing.
    assert run_give_back(node, runner)["changed"] is False


def test_give_back_refuses_a_file_changed_since_and_changes_nothing(node):
    netplan_node(node)
    assert not run_converge(node, Runner(), take_over=True).get("failed")
    with open(node / "etc/netplan/50-cloud-init.yaml", "a") as handle:
        handle.write("# edited\n")
    before = snapshot(node)
    result = run_give_back(node, Runner())
    assert result["failed"]
    assert (
        "/etc/netplan/50-cloud-init.yaml: changed since n3x rewrote it; the original is /var/lib/n3x/networkd-takeover/backup/etc/netplan/50-cloud-init.yaml"
        in result["msg"]
    )
    assert snapshot(node) == before


def test_give_back_in_check_mode_shows_the_restores(node):
    netplan_node(node)
    assert not run_converge(node, Runner(), take_over=True).get("failed")
    before = snapshot(node)
    result = run_give_back(node, Runner(), check_mode=True, diff=True)
    assert result["changed"]
    assert snapshot(node) == before
    restore = result["diff"][0]["prepared"]
    assert restore.startswith("/etc/netplan/50-cloud-init.yaml (netplan: restore)\n")
    assert "its text is not shown" in restore


def test_a_later_take_over_keeps_the_first_original(node):
    netplan_node(node)
    assert not run_converge(node, Runner(), take_over=True).get("failed")
    # The admin puts eth1 back into the (rewritten) file; the next take-over rewrites it
    # again and the backup stays the very first original.
    path = node / "etc/netplan/50-cloud-init.yaml"
    path.write_text(path.read_text().replace("        eth0:\n", "        eth1:\n            dhcp4: true\n        eth0:\n"))
    assert not run_converge(node, Runner(), take_over=True).get("failed")
    assert (node / STATE.lstrip("/") / "backup/etc/netplan/50-cloud-init.yaml").read_text() == fixture("netplan-50-cloud-init.yaml")


def test_a_symlinked_config_file_is_not_edited(node):
    write(node, "/sbin/ifup", "")
    write(node, "/srv/interfaces", fixture("interfaces-netinst"))
    (node / "etc/network").mkdir(parents=True)
    os.symlink("../../srv/interfaces", node / "etc/network/interfaces")
    before = snapshot(node)
    result = run_converge(node, Runner(), take_over=True)
    assert result["failed"]
    assert "eth1: /etc/network/interfaces is a symlink; move the ifupdown configuration aside by hand" in result["msg"]
    assert snapshot(node) == before


def test_the_state_directory_is_never_followed_through_a_symlink(node):
    netplan_node(node)
    (node / "var/lib/n3x").mkdir(parents=True)
    (node / "elsewhere").mkdir()
    os.symlink("../../../elsewhere", node / "var/lib/n3x/networkd-takeover")
    result = run_converge(node, Runner(), take_over=True)
    assert result["failed"]
    assert "is a symlink; not following it" in result["msg"]
    assert list((node / "elsewhere").iterdir()) == []


def test_networkmanager_that_is_only_installed_is_kept_off_the_nic_ifupdown_lets_go(node):
    # Debian's NetworkManager leaves interfaces that /etc/network/interfaces configures alone
    # ([ifupdown] managed=false): once the stanza is commented out it would take eth1 at
    # the next start, so the take-over writes its drop-in too.
    ifupdown_node(node)
    (node / "proc/412/cmdline").unlink()
    runner = nm_runner(node)
    runner.answers[NMCLI] = (0, "eth0:ethernet:unmanaged:\neth1:ethernet:unmanaged:\nlo:loopback:unmanaged:\n", "")
    result = run_converge(node, runner, take_over=True)
    assert not result.get("failed"), result.get("msg")
    assert [c["manager"] for c in result["conflicts"]] == ["ifupdown"]
    assert (node / "etc/NetworkManager/conf.d/90-n3x-unmanaged.conf").exists()


def test_absent_without_a_take_over_removes_our_units_only(node):
    assert not run_converge(node, Runner()).get("failed")
    runner = Runner()
    result = run_give_back(node, runner)
    assert not result.get("failed"), result.get("msg")
    assert result["restored"] == []
    assert sorted(p.rsplit("/", 1)[1] for p in result["removed"])[:2] == ["20-n3x-eth1.network", "30-n3x-eth1.100.netdev"]
    assert not list((node / "etc/systemd/network").glob("*-n3x-*"))
    assert (node / "etc/systemd/network/10-eth0-mgmt.network").exists()
    assert "networkctl reload" in runner.commands
