"""kernel_settings: modules and parameters now and at boot, one step (no Ansible).

/proc/sys and /sys/module are directories under tmp_path and modprobe is a recording
runner that "loads" by creating /sys/module/NAME; what this does to a real kernel is
proven in VMs by the k3s-prepare and jetson-arm64 scenarios.
"""

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_kernel as kernel
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import GENERATED_MARKER

SYSCTLS = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": 1}


@pytest.fixture
def node(tmp_path):
    """A node: its root, /proc/sys with ip_forward=0, /sys/module with overlay built in."""
    root, proc, sys_module = tmp_path / "root", tmp_path / "proc/sys", tmp_path / "sys/module"
    (proc / "net/ipv4").mkdir(parents=True)
    (proc / "net/ipv4/ip_forward").write_text("0\n")
    (sys_module / "overlay").mkdir(parents=True)
    root.mkdir()
    commands = []

    def run(argv):
        commands.append(" ".join(argv))
        for name in argv[2:]:
            (sys_module / name).mkdir()
            if name == "br_netfilter":  # the module brings its parameters
                (proc / "net/bridge").mkdir()
                (proc / "net/bridge/bridge-nf-call-iptables").write_text("0\n")
        return 0, "", ""

    def converge(modules=("br_netfilter", "overlay"), sysctls=SYSCTLS, **kw):
        return kernel.converge("n3x-k3s", list(modules), dict(sysctls), run, root=str(root), proc_sys=str(proc), sys_module=str(sys_module), **kw)

    return {"root": root, "proc": proc, "commands": commands, "converge": converge}


def test_first_run_writes_loads_what_is_missing_and_sets(node):
    result = node["converge"]()
    assert result["changed"]
    assert result["loaded"] == ["br_netfilter"]
    assert node["commands"] == ["modprobe -a br_netfilter"]
    assert result["set"] == ["net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"]
    assert (node["proc"] / "net/bridge/bridge-nf-call-iptables").read_text() == "1\n"
    modules = (node["root"] / "etc/modules-load.d/n3x-k3s.conf").read_text().splitlines()
    assert modules[0].startswith(GENERATED_MARKER)
    assert modules[1:] == ["br_netfilter", "overlay"]
    sysctl = (node["root"] / "etc/sysctl.d/90-n3x-k3s.conf").read_text().splitlines()
    assert sysctl[1:] == ["net.ipv4.ip_forward = 1", "net.bridge.bridge-nf-call-iptables = 1"]


def test_second_run_changes_nothing(node):
    node["converge"]()
    node["commands"].clear()
    result = node["converge"]()
    assert not result["changed"]
    assert result["written"] == result["loaded"] == result["set"] == []
    assert node["commands"] == []


def test_values_compare_without_whitespace(node):
    (node["proc"] / "net/ipv4/tcp_rmem").write_text("4096\t131072\t6291456\n")
    result = node["converge"](modules=(), sysctls={"net.ipv4.tcp_rmem": "4096 131072  6291456"})
    assert result["set"] == []


def test_check_mode_reports_and_changes_nothing(node):
    result = node["converge"](check_mode=True)
    assert result["changed"]
    assert result["loaded"] == ["br_netfilter"]
    # ip_forward differs; the bridge parameter appears only once br_netfilter loads.
    assert result["set"] == ["net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"]
    assert node["commands"] == []
    assert not (node["root"] / "etc").exists()
    assert (node["proc"] / "net/ipv4/ip_forward").read_text() == "0\n"


def test_unknown_parameter_is_named(node):
    with pytest.raises(kernel.KernelError, match=r"^net.ipv4.nope: no such kernel parameter"):
        node["converge"](modules=(), sysctls={"net.ipv4.nope": "1"})


def test_failing_modprobe_is_reported(node, tmp_path):
    def failing(argv):
        return 1, "", "modprobe: FATAL: Module nope not found"

    with pytest.raises(kernel.KernelError, match=r"modprobe -a nope failed \(rc 1\): modprobe: FATAL: Module nope not found"):
        kernel.converge("n3x-k3s", ["nope"], {}, failing, root=str(node["root"]), sys_module=str(tmp_path / "sys/module"))


def test_nothing_to_list_writes_no_file(node):
    node["converge"](modules=(), sysctls={})
    assert not (node["root"] / "etc").exists()


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", ".hidden"])
def test_name_must_be_a_file_name(node, name):
    with pytest.raises(kernel.KernelError, match="is not a file name"):
        kernel.converge(name, [], {}, None)


def written_files(node):
    return sorted(str(p.relative_to(node["root"])) for p in node["root"].rglob("*") if p.is_file())


def test_a_key_cannot_name_a_path_outside_proc_sys(node, tmp_path):
    target = tmp_path / "outside"
    with pytest.raises(kernel.KernelError) as caught:
        node["converge"](modules=(), sysctls={"net.ipv4.ip_forward": "1", f"a.{target}": "1", "a..b": "1", "../x.y": "1"})
    assert str(caught.value).splitlines() == [
        f"sysctls: {key!r} is not a kernel parameter name (dotted words of letters, digits, '_', '-', like net.ipv4.ip_forward)"
        for key in (f"a.{target}", "a..b", "../x.y")
    ]
    assert not target.exists()
    assert written_files(node) == []
    assert (node["proc"] / "net/ipv4/ip_forward").read_text() == "0\n"


@pytest.mark.parametrize(
    ("modules", "sysctls", "problem"),
    [
        ((), {"net.ipv4.ip_forward = 1\nkernel.panic": "1"}, "sysctls: 'net.ipv4.ip_forward = 1\\nkernel.panic' is not a kernel parameter name"),
        ((), {"net.ipv4.ip_forward\n": "1"}, "sysctls: 'net.ipv4.ip_forward\\n' is not a kernel parameter name"),
        ((), {"net.ipv4.ip_forward": "1\x1b[2J"}, "sysctls.net.ipv4.ip_forward: '1\\x1b[2J' holds a control character"),
        (("overlay\nnbd",), {}, "modules: 'overlay\\nnbd' is not a kernel module name"),
        (("../../x",), {}, "modules: '../../x' is not a kernel module name"),
    ],
)
def test_a_newline_or_control_character_is_refused_before_anything_is_written(node, modules, sysctls, problem):
    with pytest.raises(kernel.KernelError) as caught:
        node["converge"](modules=modules, sysctls={"net.ipv4.ip_forward": "1", **sysctls})
    assert str(caught.value).startswith(problem)
    assert "\n" not in str(caught.value)
    assert written_files(node) == []
    assert node["commands"] == []
    assert (node["proc"] / "net/ipv4/ip_forward").read_text() == "0\n"


def test_an_unknown_parameter_writes_no_file(node):
    with pytest.raises(kernel.KernelError, match=r"^net.ipv4.nope: no such kernel parameter"):
        node["converge"](modules=(), sysctls={"net.ipv4.ip_forward": "1", "net.ipv4.nope": "1"})
    assert written_files(node) == []
    assert (node["proc"] / "net/ipv4/ip_forward").read_text() == "0\n"


def test_a_slash_in_a_word_stands_for_a_dot(node):
    # sysctl.d(5): the dotted form of /proc/sys/net/ipv4/conf/eth1.200/forwarding.
    (node["proc"] / "net/ipv4/conf/eth1.200").mkdir(parents=True)
    (node["proc"] / "net/ipv4/conf/eth1.200/forwarding").write_text("0\n")
    result = node["converge"](modules=(), sysctls={"net.ipv4.conf.eth1/200.forwarding": "1"})
    assert result["set"] == ["net.ipv4.conf.eth1/200.forwarding"]
    assert (node["proc"] / "net/ipv4/conf/eth1.200/forwarding").read_text() == "1\n"
