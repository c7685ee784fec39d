"""Node trees for the take-over tests: real file names and formats under a temporary root.

A tree holds what the detectors read on a node - /etc, /run, /usr/lib, /sys/class/net,
/proc - and a Runner answers the commands they run (systemctl, nmcli, ip), recording them.
The file contents mirror what the managers write on Debian bookworm (captured in the lab
VMs of molecule/network-takeover).
"""

import os
import pathlib

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


class Runner:
    """Answers commands by their first words; records every command."""

    def __init__(self, answers=None):
        self.answers = dict(answers or {})
        self.commands = []

    def __call__(self, argv):
        line = " ".join(argv)
        self.commands.append(line)
        for prefix, answer in sorted(self.answers.items(), key=lambda item: -len(item[0])):
            if line.startswith(prefix):
                return answer
        return 0, "", ""


def fixture(name):
    return (FIXTURES / name).read_text()


def write(root, path, text, mode=0o644):
    target = pathlib.Path(root) / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    os.chmod(target, mode)
    return target


def symlink(root, path, target):
    link = pathlib.Path(root) / path.lstrip("/")
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def nic(root, name, mac, ifindex, driver="virtio_net", devtype=None, id_path=None):
    """/sys/class/net/NAME as the kernel shows it, and udev's database entry."""
    base = f"/sys/class/net/{name}"
    write(root, f"{base}/address", mac + "\n")
    write(root, f"{base}/type", "772\n" if name == "lo" else "1\n")
    write(root, f"{base}/ifindex", f"{ifindex}\n")
    write(root, f"{base}/uevent", f"INTERFACE={name}\nIFINDEX={ifindex}\n" + (f"DEVTYPE={devtype}\n" if devtype else ""))
    if driver and name != "lo" and not devtype:
        symlink(root, f"{base}/device/driver", f"../../../../bus/virtio/drivers/{driver}")
    if id_path:
        write(root, f"/run/udev/data/n{ifindex}", f"I:1\nE:ID_NET_DRIVER={driver}\nE:ID_PATH={id_path}\n")


def lab_nics(root):
    """A lab VM's links: lo, eth0 (management), eth1 (the lab segment)."""
    nic(root, "lo", "00:00:00:00:00:00", 1, driver=None)
    nic(root, "eth0", "52:54:00:aa:00:01", 2, id_path="pci-0000:00:03.0")
    nic(root, "eth1", "52:54:00:aa:01:01", 3, id_path="pci-0000:00:04.0")


def process(root, pid, argv, cgroup):
    """/proc/PID with its cmdline (NUL-separated) and its cgroup v2 line."""
    write(root, f"/proc/{pid}/cmdline", "\0".join(argv) + "\0")
    write(root, f"/proc/{pid}/cgroup", f"0::{cgroup}\n")


def snapshot(root):
    """{relative path: (mode, content or link target)} of a whole tree."""
    found = {}
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                found[rel] = ("link", os.readlink(path))
            else:
                found[rel] = (os.stat(path).st_mode & 0o7777, pathlib.Path(path).read_bytes())
        for name in _dirs:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                found[os.path.relpath(path, root)] = ("link", os.readlink(path))
    return found
