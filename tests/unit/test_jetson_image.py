"""Each board's image starts from a clean rootfs: no name, user or key of the board before it.

The BSP's tools/l4t_create_default_user.sh needs an arm64 Ubuntu rootfs and qemu-aarch64-static
(it runs useradd in a chroot), which this machine has not. DEFAULT_USER below does to the test
rootfs what the R36 script does to a real one, step by step (johnnynunez/Linux_for_Tegra
tools/l4t_create_default_user.sh): groupadd -rf weston-launch, useradd -m -G sudo,... -p with
`date +%s | sha256sum | base64 | head -c 8`, removing etc/systemd/system/default.target,
touching etc/nv/nvautoconfig, writing etc/hostname and appending `127.0.1.1 <host>` to
etc/hosts, and printing the password. It uses the host's real useradd/groupadd on the tree
(--prefix). What is under test is n3x's part: the clean state, the lock, the keys, the host key.
"""

import os
import subprocess

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_jetson_image as im

from .l4t_tree import make_bsp

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="useradd --prefix and chown need root, as l4t_create_default_user.sh does")

DEFAULT_USER = r"""#!/bin/bash
set -e
while [ -n "$1" ]; do
	case "$1" in
	-u) user_name="$2"; shift 2 ;;
	-p) user_pass="$2"; shift 2 ;;
	-n) host_name="$2"; shift 2 ;;
	--accept-license) shift ;;
	*) echo "ERROR: Invalid parameter"; exit 1 ;;
	esac
done
rfs_dir="$(cd "$(dirname "$0")/.." && pwd)/rootfs"
[ -n "${user_pass}" ] || user_pass="$(date +%s | sha256sum | base64 | head -c 8)"
echo "Creating: Username - ${user_name}, Password - ${user_pass}, Autologin - false"
groupadd --prefix "${rfs_dir}" -rf weston-launch
if [ -d "${rfs_dir}/home/${user_name}" ]; then
	useradd --prefix "${rfs_dir}" -G "sudo,video,audio,adm,render,weston-launch" -s /bin/bash \
		-p "$(echo "${user_pass}" | openssl passwd -1 -stdin)" "${user_name}" || true
else
	useradd --prefix "${rfs_dir}" -d "/home/${user_name}" -m -G "sudo,video,audio,adm,render,weston-launch" -s /bin/bash \
		-p "$(echo "${user_pass}" | openssl passwd -1 -stdin)" "${user_name}"
fi
rm -f "${rfs_dir}/etc/systemd/system/default.target"
touch "${rfs_dir}/etc/nv/nvautoconfig"
echo "${host_name}" > "${rfs_dir}/etc/hostname"
if [ "$(grep -Fxc "127.0.1.1 ${host_name}" "${rfs_dir}/etc/hosts")" == "0" ]; then
	echo "127.0.1.1 ${host_name}" >> "${rfs_dir}/etc/hosts"
fi
"""
KEY_1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx3Q9b1k7pGq2h2oQWm1a8b3u0iVbW6o4v6C8i4rJ0y ops@controller"
KEY_2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPv9kq4dW0nW6Yb2f7e2kqH8o1m3Zs8xXk3sD2hN0aQe other@controller"


def make_rootfs(rootfs):
    files = {
        "etc/passwd": (
            "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
        "etc/shadow": "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
        "etc/group": "root:x:0:\nadm:x:4:\nsudo:x:27:\naudio:x:29:\nvideo:x:44:\nrender:x:109:\nnogroup:x:65534:\n",
        "etc/gshadow": "root:*::\nadm:*::\nsudo:*::\naudio:*::\nvideo:*::\nrender:*::\nnogroup:*::\n",
        "etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
        "etc/hostname": "localhost\n",
        "etc/skel/.bashrc": "# skel\n",
        "etc/ssh/ssh_host_rsa_key": "SHARED-RSA-KEY-OF-THE-SAMPLE-ROOTFS\n",
        "etc/ssh/ssh_host_rsa_key.pub": "ssh-rsa AAAAshared root@sample\n",
        "usr/share/doc/nvidia-tegra/Tegra_Software_License_Agreement-Tegra-Linux.txt": "license\n",
    }
    for rel, text in files.items():
        path = rootfs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (rootfs / "etc/shadow").chmod(0o640)
    (rootfs / "etc/ssh/sshd_config.d").mkdir()
    (rootfs / "etc/nv").mkdir()
    (rootfs / "etc/systemd/system").mkdir(parents=True)
    os.symlink("/lib/systemd/system/oem-config.target", rootfs / "etc/systemd/system/default.target")


@pytest.fixture
def bsp(tmp_path):
    bsp = make_bsp(tmp_path / "Linux_for_Tegra")
    make_rootfs(bsp / "rootfs")
    script = bsp / "tools/l4t_create_default_user.sh"
    script.write_text(DEFAULT_USER)
    script.chmod(0o755)
    return bsp


def run(argv, cwd=None):
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    return result.returncode, result.stdout, result.stderr


def shadow_entry(rootfs, user):
    return next(line for line in (rootfs / "etc/shadow").read_text().splitlines() if line.startswith(f"{user}:"))


def test_board_2_carries_nothing_of_board_1(bsp):
    rootfs = bsp / "rootfs"
    key_1 = im.customise(str(bsp), "n3x", "jetson-1", [KEY_1], run)
    assert "127.0.1.1 jetson-1" in (rootfs / "etc/hosts").read_text()
    key_2 = im.customise(str(bsp), "n3x", "jetson-2", [KEY_2], run)
    hosts = (rootfs / "etc/hosts").read_text()
    assert hosts == "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n127.0.1.1 jetson-2\n"
    assert "jetson-1" not in hosts
    assert (rootfs / "etc/hostname").read_text() == "jetson-2\n"
    assert (rootfs / "home/n3x/.ssh/authorized_keys").read_text() == KEY_2 + "\n"
    assert [line.split(":")[0] for line in (rootfs / "etc/passwd").read_text().splitlines()].count("n3x") == 1
    assert key_1 != key_2
    assert (rootfs / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2] == key_2.split()
    assert (rootfs / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[2] == "root@jetson-2"


def test_password_locked_keys_only_and_sshd_takes_keys_only(bsp):
    rootfs = bsp / "rootfs"
    im.customise(str(bsp), "n3x", "jetson-1", [KEY_1, "  "], run)
    assert shadow_entry(rootfs, "n3x").split(":")[1] == "!"
    assert oct((rootfs / "etc/shadow").stat().st_mode & 0o777) == "0o640"
    uid = int(next(line for line in (rootfs / "etc/passwd").read_text().splitlines() if line.startswith("n3x:")).split(":")[2])
    keys = rootfs / "home/n3x/.ssh/authorized_keys"
    assert keys.read_text() == KEY_1 + "\n"
    assert (oct(keys.stat().st_mode & 0o777), keys.stat().st_uid) == ("0o600", uid)
    assert oct((rootfs / "home/n3x/.ssh").stat().st_mode & 0o777) == "0o700"
    dropin = (rootfs / "etc/ssh/sshd_config.d/10-n3x.conf").read_text()
    assert "\nPasswordAuthentication no\n" in dropin
    assert "\nUsePAM yes\n" in dropin  # without PAM, sshd refuses key logins to a "!" (locked) account
    assert "\nHostKey /etc/ssh/ssh_host_ed25519_key\n" in dropin
    sudoers = rootfs / "etc/sudoers.d/90-n3x-n3x"
    assert sudoers.read_text().endswith("n3x ALL=(ALL) NOPASSWD:ALL\n")
    assert oct(sudoers.stat().st_mode & 0o777) == "0o440"
    host_key = rootfs / "etc/ssh/ssh_host_ed25519_key"
    assert (oct(host_key.stat().st_mode & 0o777), host_key.stat().st_uid) == ("0o600", 0)
    assert not (rootfs / "etc/ssh/ssh_host_rsa_key").exists()  # the sample rootfs's key is every board's: not this one's


def test_restore_brings_back_the_clean_rootfs_exactly(bsp):
    rootfs = bsp / "rootfs"
    before = {
        rel: (rootfs / rel).read_bytes()
        for rel in ("etc/passwd", "etc/shadow", "etc/group", "etc/gshadow", "etc/hosts", "etc/hostname", "etc/ssh/ssh_host_rsa_key")
    }
    im.customise(str(bsp), "n3x", "jetson-1", [KEY_1], run)
    im.restore(str(bsp))
    assert {rel: (rootfs / rel).read_bytes() for rel in before} == before
    assert os.readlink(rootfs / "etc/systemd/system/default.target") == "/lib/systemd/system/oem-config.target"
    for gone in ("home/n3x", "etc/nv/nvautoconfig", "etc/sudoers.d/90-n3x-n3x", "etc/ssh/ssh_host_ed25519_key", "etc/ssh/sshd_config.d/10-n3x.conf"):
        assert not os.path.lexists(rootfs / gone), gone
    assert oct((bsp / ".n3x").stat().st_mode & 0o777) == "0o700"  # it holds a copy of etc/shadow


def test_the_script_output_never_shows_the_password(bsp):
    (bsp / "tools/l4t_create_default_user.sh").write_text(DEFAULT_USER.replace("groupadd --prefix", "exit 7\ngroupadd --prefix"))
    with pytest.raises(im.ImageError) as failure:
        im.customise(str(bsp), "n3x", "jetson-1", [KEY_1], run)
    assert "failed (7)" in str(failure.value)
    assert "Password -" not in str(failure.value)
    assert "[line about the password removed]" in str(failure.value)


def test_a_rootfs_customised_before_n3x_saw_it_is_refused(bsp):
    rootfs = bsp / "rootfs"
    with open(rootfs / "etc/passwd", "a") as passwd:
        passwd.write("nvidia:x:1000:1000::/home/nvidia:/bin/bash\n")
    with pytest.raises(im.ImageError, match="already has user nvidia: it was customised before n3x saw it"):
        im.customise(str(bsp), "n3x", "jetson-1", [KEY_1], run)


def test_a_symlinked_directory_in_the_rootfs_is_never_written_through(bsp, tmp_path):
    rootfs = bsp / "rootfs"
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(rootfs / "etc/ssh", tmp_path / "ssh-moved")
    os.symlink(outside, rootfs / "etc/ssh")
    with pytest.raises(im.ImageError, match="is a symlink or not a directory; refusing to write through it"):
        im.customise(str(bsp), "n3x", "jetson-1", [KEY_1], run)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    ("user", "hostname", "keys", "message"),
    [
        ("root; reboot", "jetson-1", [KEY_1], "is not a valid Linux user name"),
        ("n3x", "jetson_1", [KEY_1], "is not a valid host name"),
        ("n3x", "a" * 64, [KEY_1], "is not a valid host name"),
        ("n3x", "jetson-1\n127.0.0.1", [KEY_1], "is not a valid host name"),
        ("n3x", "jetson-1", [""], "no SSH public key"),
        ("n3x", "jetson-1", ["-----BEGIN OPENSSH PRIVATE KEY-----"], "not an SSH public key line"),
        ("n3x", "jetson-1", [KEY_1 + "\ncommand=evil ssh-ed25519 AAAA"], "not an SSH public key line"),
    ],
)
def test_bad_settings_are_refused_before_the_rootfs_is_touched(bsp, user, hostname, keys, message):
    with pytest.raises(im.ImageError, match=message):
        im.customise(str(bsp), user, hostname, keys, run)
    assert not (bsp / ".n3x").exists()
    assert not (bsp.parent / "scripts-ran").exists()


def test_a_symlinked_state_directory_is_refused(bsp, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, bsp / ".n3x")
    with pytest.raises(im.ImageError, match=r"\.n3x holds a symlink; refusing to read or write the rootfs state through it"):
        im.customise(str(bsp), "n3x", "jetson-1", [KEY_1], run)
    assert list(elsewhere.iterdir()) == []
