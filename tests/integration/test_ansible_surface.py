"""The Ansible surface, run for real: ansible-doc, playbooks/render.yml, the built collection."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_files import MANIFEST

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
PLUGINS = sorted(
    [("module", p.stem) for p in (REPO / "plugins/modules").glob("*.py") if p.stem != "__init__"]
    + [("filter", p.stem) for p in (REPO / "plugins/filter").glob("*.py") if p.stem != "__init__"]
)


def run(args, cwd=REPO, env=None, check=False):
    # JSON results: ansible-core before 2.19 wraps and re-quotes long messages in YAML results.
    full_env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json", **(env or {})}
    result = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600, check=False)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.parametrize(("kind", "name"), PLUGINS, ids=[f"{k}:{n}" for k, n in PLUGINS])
def test_ansible_doc(kind, name):
    result = run(["ansible-doc", "-t", kind, "--json", f"n3x.cluster.{name}"], check=True)
    doc = json.loads(result.stdout)[f"n3x.cluster.{name}"]
    assert doc["doc"]["short_description"]
    assert doc["examples"]
    assert doc["return"]


def test_render_writes_every_node_and_is_idempotent(tmp_path):
    out = tmp_path / "out"
    first = run(["ansible-playbook", "playbooks/render.yml", "-e", "profile=bonding-vlans", "-e", f"render_dir={out}"], check=True)
    assert "quorum is 2 of 2" in first.stdout + first.stderr
    for node in ("server-1", "server-2", "agent-1", "agent-2"):
        golden = REPO / "tests/unit/golden/bonding-vlans" / node
        written = {str(p.relative_to(out / node)): p.read_text() for p in (out / node).rglob("*") if p.is_file() and p.name != MANIFEST}
        assert written == {str(p.relative_to(golden)): p.read_text() for p in golden.rglob("*") if p.is_file()}
        assert oct((out / node / "etc/rancher/k3s/config.yaml").stat().st_mode & 0o777) == "0o600"
    second = run(["ansible-playbook", "playbooks/render.yml", "-e", "profile=bonding-vlans", "-e", f"render_dir={out}"], check=True)
    assert "changed=0" in second.stdout


def test_render_accepts_a_path(tmp_path):
    profile = tmp_path / "site.yml"
    profile.write_text((REPO / "profiles/simple.yml").read_text().replace("192.168.1.", "10.9.8."))
    run(["ansible-playbook", "playbooks/render.yml", "-e", f"profile={profile}", "-e", f"render_dir={tmp_path / 'out'}"], check=True)
    assert "Address=10.9.8.3/24" in (tmp_path / "out/agent-1/etc/systemd/network/20-n3x-eth1.network").read_text()


def test_invalid_profile_fails_with_one_clear_error_and_writes_nothing(tmp_path):
    profile = tmp_path / "broken.yml"
    profile.write_text((REPO / "profiles/simple.yml").read_text().replace("192.168.1.2}", "192.168.1.300}"))
    out = tmp_path / "out"
    result = run(["ansible-playbook", "playbooks/render.yml", "-e", f"profile={profile}", "-e", f"render_dir={out}"])
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{profile}: ip_addresses.server-2.cluster: '192.168.1.300' is not an IPv4 address" in output
    assert "Traceback" not in output
    assert not out.exists()


def test_unknown_profile_name_lists_shipped_ones(tmp_path):
    result = run(["ansible-playbook", "playbooks/render.yml", "-e", "profile=vlan", "-e", f"render_dir={tmp_path / 'out'}"])
    assert result.returncode != 0
    assert "profiles/vlan.yml: no such file; shipped profiles: bonding-vlans, dhcp-simple, simple, vlans, vlans-broken" in result.stdout


def test_built_collection_installs_and_runs(tmp_path):
    build = run(["ansible-galaxy", "collection", "build", "--output-path", str(tmp_path), str(REPO)], check=True)
    (tarball,) = tmp_path.glob("n3x-cluster-*.tar.gz")
    assert "Created collection" in build.stdout
    installed = tmp_path / "collections"
    run(["ansible-galaxy", "collection", "install", "--offline", "-p", str(installed), str(tarball)], cwd=tmp_path, check=True)
    root = installed / "ansible_collections/n3x/cluster"
    assert (root / "profiles/vlans.yml").is_file()
    assert not (root / ".venv").exists()
    workdir = tmp_path / "work"
    workdir.mkdir()
    shutil.copytree(REPO / "inventories/lab", workdir / "lab")
    (workdir / "ansible.cfg").write_text("[defaults]\n")
    env = {"ANSIBLE_COLLECTIONS_PATH": str(installed)}
    result = run(
        ["ansible-playbook", "-i", "lab/hosts.yml", "n3x.cluster.render", "-e", "profile=vlans", "-e", f"render_dir={workdir / 'out'}"],
        cwd=workdir,
        env=env,
        check=True,
    )
    assert str(root) not in result.stderr or "WARNING" not in result.stderr
    assert (workdir / "out/server-2/etc/systemd/network/30-n3x-eth1.200.network").is_file()


def test_relative_render_dir_is_relative_to_the_callers_directory(tmp_path):
    run(["ansible-playbook", "playbooks/render.yml", "-e", "profile=simple", "-e", "render_dir=out"], cwd=REPO, env={"PWD": str(tmp_path)}, check=True)
    assert (tmp_path / "out/server-1/etc/systemd/network/20-n3x-eth1.network").is_file()
