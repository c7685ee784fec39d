"""The k3s role and playbooks, run for real as far as this machine allows.

No k3s binary is reachable here and the lab VMs are not running, so these tests run the
controller phase only: every host connection goes to a stand-in ssh that records the
attempt and fails, and the tests assert it was never called. The artifacts checksummed
are small test files; nothing here is, or pretends to be, k3s.
"""

import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
ROLE = REPO / "roles/k3s"
THREE_WAYS = (
    "no k3s v1.35.0+k3s3 binary for amd64 is available: set k3s_binary_path=/path/to/k3s, "
    "or k3s_airgap_dir=DIR with k3s, k3s-airgap-images-amd64.tar.zst and sha256sum-amd64.txt, "
    "or allow download of v1.35.0+k3s3 from https://github.com/k3s-io/k3s/releases/download/v1.35.0%2Bk3s3/ with k3s_download=true"
)


@pytest.fixture
def ssh_spy(tmp_path):
    """An ssh that records that it was called and fails; returns (env, marker)."""
    marker = tmp_path / "ssh-called"
    spy = tmp_path / "ssh"
    spy.write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexit 255\n')
    spy.chmod(0o755)
    return {"ANSIBLE_SSH_EXECUTABLE": str(spy)}, marker


def run(args, env=None, timeout=300):
    full_env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", **(env or {})}
    for name in list(full_env):
        if name.startswith("K3S_"):  # nothing from the caller's shell may supply k3s
            del full_env[name]
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def flat(result):
    """Output with line wrapping undone, for messages the callback wraps."""
    return " ".join((result.stdout + result.stderr).split())


def recap(result):
    return dict(re.findall(r"^(\S+)\s+: (ok=.*)$", result.stdout, re.MULTILINE))


def test_ssh_spy_sees_a_real_connection_attempt(ssh_spy):
    env, marker = ssh_spy
    run(["ansible", "-i", "inventories/lab/hosts.yml", "server-1", "-m", "ansible.builtin.ping"], env=env)
    assert marker.exists()


def test_no_k3s_fails_fast_on_the_controller_with_the_three_ways(ssh_spy):
    env, marker = ssh_spy
    result = run(["ansible-playbook", "-i", "inventories/lab/hosts.yml", "playbooks/k3s.yml", "-e", "profile=simple"], env=env, timeout=120)
    assert result.returncode != 0
    assert THREE_WAYS in flat(result)
    assert "Traceback" not in flat(result)
    assert not marker.exists(), f"a host was contacted: {marker.read_text()}"
    stats = recap(result)
    assert set(stats) == {"server-1", "server-2", "agent-1", "agent-2"}
    for host, line in stats.items():
        assert "changed=0" in line, host
        assert "unreachable=0" in line, host
    # Nothing after the controller play ran.
    assert "PLAY [Start the cluster on the init server]" not in result.stdout
    assert "PLAY [Join" not in result.stdout


def test_corrupt_airgap_tarball_is_refused_before_any_host(tmp_path, ssh_spy):
    env, marker = ssh_spy
    airgap = tmp_path / "airgap"
    airgap.mkdir()
    (airgap / "k3s").write_bytes(b"test file, not k3s\n")
    (airgap / "k3s-airgap-images-amd64.tar.zst").write_bytes(b"test images, damaged\n")
    (airgap / "sha256sum-amd64.txt").write_text(
        subprocess.run(["sha256sum", "k3s"], cwd=airgap, capture_output=True, text=True, check=True).stdout + "0" * 64 + "  k3s-airgap-images-amd64.tar.zst\n"
    )
    result = run(["ansible-playbook", "playbooks/k3s.yml", "-e", "profile=simple", "-e", f"k3s_airgap_dir={airgap}"], env=env, timeout=120)
    assert result.returncode != 0
    images = airgap / "k3s-airgap-images-amd64.tar.zst"
    actual = subprocess.run(["sha256sum", str(images)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert f"{images}: sha256 mismatch, refusing to use it: expected {'0' * 64}, got {actual}" in flat(result)
    assert not marker.exists()


def test_bad_extra_config_is_refused_before_any_host(tmp_path, ssh_spy):
    env, marker = ssh_spy
    result = run(
        ["ansible-playbook", "playbooks/k3s.yml", "-e", "profile=simple", "-e", '{"k3s_extra_config": {"tls-san": ["x"]}}', "-e", "k3s_download=true"],
        env=env,
        timeout=120,
    )
    assert result.returncode != 0
    assert "k3s config of agent-1: tls-san: is a k3s server flag only" in flat(result)
    assert not marker.exists()


def test_controller_phase_plans_every_node(tmp_path, ssh_spy):
    """With a valid (test-file) airgap directory the controller phase resolves everything."""
    env, marker = ssh_spy
    airgap = tmp_path / "airgap"
    airgap.mkdir()
    (airgap / "k3s").write_bytes(b"test file, not k3s\n")
    (airgap / "k3s-airgap-images-amd64.tar.zst").write_bytes(b"test images\n")
    sums = subprocess.run(["sha256sum", "k3s", "k3s-airgap-images-amd64.tar.zst"], cwd=airgap, capture_output=True, text=True, check=True).stdout
    (airgap / "sha256sum-amd64.txt").write_text(sums)
    out = tmp_path / "plan"
    playbook = tmp_path / "plan.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Controller phase only",
                    "hosts": "k3s_cluster",
                    "gather_facts": False,
                    "tasks": [
                        {"name": "Resolve", "ansible.builtin.include_role": {"name": "n3x.cluster.k3s", "tasks_from": "artifact.yml"}},
                        {
                            "name": "Record the plan",
                            "ansible.builtin.copy": {
                                "dest": f"{out}/{{{{ inventory_hostname }}}}.json",
                                "mode": "0644",
                                "content": "{{ {'groups': group_names, 'unit': k3s_unit_name, 'config': k3s_config_text, "
                                "'source': k3s_source, 'init': k3s_init_node} | to_json }}",
                            },
                            "delegate_to": "localhost",
                        },
                    ],
                }
            ]
        )
    )
    out.mkdir()
    result = run(["ansible-playbook", str(playbook), "-e", "profile=bonding-vlans", "-e", f"k3s_airgap_dir={airgap}"], env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not marker.exists()
    sha = dict(line.split()[::-1] for line in sums.splitlines())
    for node, role in (("server-1", "server"), ("server-2", "server"), ("agent-1", "agent"), ("agent-2", "agent")):
        plan = json.loads((out / f"{node}.json").read_text())
        assert ("k3s_init" in plan["groups"]) == (node == "server-1")
        assert ("k3s_join" in plan["groups"]) == (node != "server-1")
        assert plan["init"] == "server-1"
        assert plan["unit"] == {"server": "k3s.service", "agent": "k3s-agent.service"}[role]
        golden = REPO / "tests/unit/golden/bonding-vlans" / node / "etc/rancher/k3s/config.yaml"
        assert plan["config"] == golden.read_text()
        assert plan["source"]["source"] == "airgap_dir"
        assert plan["source"]["binary"] == str(airgap / "k3s")
        assert plan["source"]["binary_sha256"] == sha["k3s"]
        assert plan["source"]["images_sha256"] == sha["k3s-airgap-images-amd64.tar.zst"]
    assert "config.yaml checked against the k3s v1.35.0+k3s3 flag table" in flat(result)
    # A binary without a sha256, accepted only by the opt-out, which the run names.
    (airgap / "own").mkdir()
    (airgap / "own" / "k3s").write_bytes(b"another test file\n")
    opted = run(
        [
            "ansible-playbook",
            str(playbook),
            "-e",
            "profile=bonding-vlans",
            "-e",
            f"k3s_binary_path={airgap / 'own' / 'k3s'}",
            "-e",
            "k3s_allow_unverified_binary=true",
        ],
        env=env,
        timeout=120,
    )
    assert opted.returncode == 0, opted.stdout
    assert "UNVERIFIED: no sha256 was checked, k3s_allow_unverified_binary=true" in flat(opted)
    assert not marker.exists()


def test_whole_cluster_reset_needs_the_cluster_name_before_any_host(ssh_spy):
    env, marker = ssh_spy
    for extra in ([], ["-e", "k3s_reset_confirm=https://192.168.1.9:6443"]):
        result = run(["ansible-playbook", "-i", "inventories/lab/hosts.yml", "playbooks/reset.yml", "-e", "profile=simple", *extra], env=env, timeout=120)
        assert result.returncode != 0
        assert (
            "resetting every server (server-1, server-2) ends the cluster https://192.168.1.1:6443: its etcd data, its tokens and every "
            "local-path volume (/var/lib/rancher/k3s/storage) on every node are deleted. Nothing changed. To go ahead, add "
            "-e k3s_reset_confirm=https://192.168.1.1:6443"
        ) in flat(result)
        assert not marker.exists(), f"a host was contacted: {marker.read_text()}"
        assert "PLAY [Remove k3s]" not in result.stdout


def test_resetting_the_init_server_alone_is_refused_before_any_host(ssh_spy):
    """server-1 is server_api's host: cluster.yml would add it back with cluster-init, a new cluster."""
    env, marker = ssh_spy
    result = run(
        ["ansible-playbook", "-i", "inventories/lab/hosts.yml", "playbooks/reset.yml", "-e", "profile=simple", "--limit", "server-1"], env=env, timeout=120
    )
    assert result.returncode != 0
    assert "nothing changed: server-1 is the host of server_api https://192.168.1.1:6443, the server the cluster was initialised on" in flat(result)
    assert not marker.exists(), f"a host was contacted: {marker.read_text()}"


def test_upgrade_without_k3s_fails_before_any_host(ssh_spy):
    env, marker = ssh_spy
    result = run(["ansible-playbook", "-i", "inventories/lab/hosts.yml", "playbooks/upgrade.yml", "-e", "profile=simple"], env=env, timeout=120)
    assert result.returncode != 0
    assert THREE_WAYS in flat(result)
    assert not marker.exists(), f"a host was contacted: {marker.read_text()}"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-e", "k3s_version=v1.34.2+k3s1"], "'v1.34.2+k3s1' is minor 1.34, and n3x has flag tables for v1.35 (v1.35.0+k3s3) only"),
        (["-e", "k3s_binary_path=/etc/hostname"], "k3s_binary_path /etc/hostname: no sha256 to check it against"),
    ],
)
def test_unknown_minor_and_unverified_binary_are_refused_before_any_host(ssh_spy, extra, message):
    env, marker = ssh_spy
    # JSON results: ansible-core before 2.19 re-quotes a YAML result's ' as ''.
    env = {**env, "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}
    result = run(["ansible-playbook", "-i", "inventories/lab/hosts.yml", "playbooks/k3s.yml", "-e", "profile=simple", *extra], env=env, timeout=120)
    assert result.returncode != 0
    assert message in flat(result)
    assert not marker.exists(), f"a host was contacted: {marker.read_text()}"


def test_playbooks_parse():
    for playbook in (
        "playbooks/k3s.yml",
        "playbooks/upgrade.yml",
        "playbooks/reset.yml",
        "playbooks/cluster.yml",
        "playbooks/k3s-prepare.yml",
        "playbooks/storage.yml",
        "molecule/shared/converge-k3s.yml",
    ):
        result = run(["ansible-playbook", "--syntax-check", playbook])
        assert result.returncode == 0, result.stdout + result.stderr


# --- the token never shows


def tasks_in(items):
    for task in items or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from tasks_in(task.get(key))


def role_and_playbook_tasks():
    files = [*sorted((ROLE / "tasks").glob("*.yml")), ROLE / "handlers/main.yml", REPO / "playbooks/k3s.yml", REPO / "playbooks/reset.yml"]
    for path in files:
        data = yaml.safe_load(path.read_text()) or []
        plays = [item for item in data if "hosts" in item] if path.parent.name == "playbooks" else [{"tasks": data}]
        for play in plays:
            for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                for task in tasks_in(play.get(section)):
                    yield path, task


TOKEN_VALUE = re.compile(
    r"\b(k3s_token|k3s_token_read|k3s_agent_token|k3s_agent_token_read|k3s_server_token_value|k3s_agent_token_value|k3s_bootstrapped_read)\b|ansible\.builtin\.password"
)
TOKEN_FILE_ARGS = ("dest", "src", "path")
# Keys whose values are bare Jinja expressions; elsewhere only {{ }} and {% %} are evaluated.
CONDITIONS = ("when", "that", "until", "changed_when", "failed_when")
JINJA = re.compile(r"{{.*?}}|{%.*?%}", re.DOTALL)


def expressions(value, key=None):
    """Every Jinja expression in a task's values (plain text that names a variable is not one)."""
    if isinstance(value, dict):
        for child_key, child in value.items():
            yield from expressions(child, child_key)
    elif isinstance(value, list):
        for child in value:
            yield from expressions(child, key)
    elif isinstance(value, str):
        yield from JINJA.findall(value)
        if key in CONDITIONS:
            yield value


def touches_token(task):
    """The task evaluates the token's value, or reads or writes the token file."""
    body = {key: value for key, value in task.items() if key not in ("name", "block", "rescue", "always")}
    if any(TOKEN_VALUE.search(expression) for expression in expressions(body)):
        return True
    args = [value for value in body.values() if isinstance(value, dict)]
    files = ("{{k3s_token_file}}", "{{k3s_agent_token_file}}", "{{k3s_bootstrapped_token_file}}")
    return any(str(arg.get(key, "")).replace(" ", "") in files for arg in args for key in TOKEN_FILE_ARGS)


def test_every_task_touching_the_token_has_no_log():
    touching = [(path, task) for path, task in role_and_playbook_tasks() if touches_token(task)]
    names = {task["name"] for _, task in touching}
    # Guard the guard: the generating, reading and writing tasks must be found.
    assert {
        "Generate the server and agent tokens once on the init server",
        "Read the server token back from the init server",
        "Read the agent token back from the init server",
        "Read the token this server's cluster was bootstrapped with",
        "Check the token against the bootstrapped one",
        "Write the server token (servers only)",
        "Write the agent token",
    } <= names
    for path, task in touching:
        assert task.get("no_log") is True, f"{path.relative_to(REPO)}: {task['name']!r} touches the token without no_log: true"


def test_the_token_is_never_on_a_command_line():
    for path, task in role_and_playbook_tasks():
        for module in ("ansible.builtin.command", "ansible.builtin.shell", "ansible.builtin.script", "ansible.builtin.raw"):
            if module in task:
                assert "token" not in json.dumps(task[module]).lower(), f"{path.relative_to(REPO)}: {task['name']!r}"


def test_argument_specs_cover_defaults_and_hide_the_token():
    specs = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    assert set(defaults) == set(specs)
    assert specs["k3s_token"]["no_log"] is True
    for name, spec in specs.items():
        if "default" in spec and name != "k3s_profile":
            assert spec["default"] == defaults[name], name


def token_run(tmp_path, token_file, agent_token_file, role="server", init="localhost"):
    """The argv of ansible-playbook running the role's token.yml against this machine, writing
    only the given files (below tmp_path)."""
    playbook = tmp_path / "token.yml"
    task = {"name": "Token", "ansible.builtin.include_role": {"name": "n3x.cluster.k3s", "tasks_from": "token.yml"}}
    playbook.write_text(yaml.safe_dump([{"name": "Token only", "hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [task]}]))
    return [
        "ansible-playbook",
        "-vvv",
        str(playbook),
        "-e",
        f"k3s_token_file={token_file}",
        "-e",
        f"k3s_agent_token_file={agent_token_file}",
        "-e",
        f"k3s_bootstrapped_token_file={tmp_path / 'server-token'}",
        "-e",
        f"k3s_init_node={init}",
        "-e",
        json.dumps({"k3s_node": {"k3s_role": role}}),
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="token.yml sets root ownership, which needs root")
def test_token_is_generated_once_0600_and_never_printed(tmp_path):
    """token.yml against this machine, writing only below tmp_path, at the highest verbosity."""
    token_file = tmp_path / "rancher" / "token"
    agent_token_file = tmp_path / "rancher" / "agent-token"
    args = token_run(tmp_path, token_file, agent_token_file)
    first = run(args)
    assert first.returncode == 0, first.stdout + first.stderr
    token, agent_token = token_file.read_text(), agent_token_file.read_text()
    assert len(token) == 64
    assert len(agent_token) == 64
    assert token != agent_token, "the agent token is a token of its own"
    for path in (token_file, agent_token_file):
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert token not in first.stdout + first.stderr
    assert agent_token not in first.stdout + first.stderr
    assert "censored" in first.stdout
    second = run(args)
    assert second.returncode == 0
    assert (token_file.read_text(), agent_token_file.read_text()) == (token, agent_token), "an existing token must never be replaced"
    assert token not in second.stdout + second.stderr
    assert "changed=0" in second.stdout
    # The server ran: its bootstrapped token refuses any other token, and accepts its own.
    (tmp_path / "server-token").write_text(f"K10{'a' * 64}::server:{token}\n")
    other = run([*args, "-e", "k3s_token=from-the-vault-0123456789"])
    assert other.returncode != 0
    assert "the server token n3x would write is not the one this cluster was bootstrapped with" in flat(other)
    assert "from-the-vault-0123456789" not in other.stdout + other.stderr
    assert token_file.read_text() == token, "a refused token changes nothing"
    same = run([*args, "-e", f"k3s_token=K10{'a' * 64}::server:{token}"])
    assert same.returncode == 0, same.stdout
    assert token not in same.stdout + same.stderr
    (tmp_path / "server-token").unlink()
    given = run([*args, "-e", "k3s_token=from-the-vault-0123456789", "-e", "k3s_agent_token=agent-from-the-vault-42"])
    assert given.returncode == 0
    assert token_file.read_text() == "from-the-vault-0123456789"
    assert agent_token_file.read_text() == "agent-from-the-vault-42"
    assert "from-the-vault-0123456789" not in given.stdout + given.stderr
    assert "agent-from-the-vault-42" not in given.stdout + given.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="token.yml sets root ownership, which needs root")
def test_a_bootstrapped_server_without_its_token_files_gets_none_generated(tmp_path):
    """The init server's cluster ran (server/token) but /etc/rancher/k3s lost its tokens: a new random
    token would be refused as the wrong one and a new agent token would not be the cluster's, so
    nothing is generated or written, and the run says which token to give."""
    (tmp_path / "server-token").write_text(f"K10{'a' * 64}::server:the-clusters-own-token\n")
    token_file, agent_token_file = tmp_path / "rancher" / "token", tmp_path / "rancher" / "agent-token"
    args = token_run(tmp_path, token_file, agent_token_file)
    # JSON results: ansible-core before 2.19 re-quotes a YAML result's ' as ''.
    result = run(args, env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    assert result.returncode != 0
    assert f"this server's cluster was bootstrapped ({tmp_path / 'server-token'}), but localhost has no {token_file}" in flat(result)
    assert not token_file.exists()
    assert not agent_token_file.exists()
    given = run([*args, "-e", "k3s_token=the-clusters-own-token", "-e", "k3s_agent_token=the-clusters-agent-token"])
    assert given.returncode == 0, given.stdout
    assert (token_file.read_text(), agent_token_file.read_text()) == ("the-clusters-own-token", "the-clusters-agent-token")


@pytest.mark.skipif(os.geteuid() != 0, reason="install.yml sets root ownership, which needs root")
def test_install_in_check_mode_on_a_fresh_node_writes_nothing_and_fails_nowhere(tmp_path):
    """install.yml with --check where no k3s is installed yet (a first cluster.yml --check): the
    links to k3s are reported, not refused for naming a k3s that is not there yet."""
    binary = tmp_path / "k3s-test-binary"
    binary.write_bytes(b"test binary, not k3s\n")
    task = {"name": "Install", "ansible.builtin.include_role": {"name": "n3x.cluster.k3s", "tasks_from": "install.yml"}}
    playbook = tmp_path / "install.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Install only", "hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [task]}]))
    node = tmp_path / "node"
    source = {"binary": str(binary), "binary_sha256": hashlib.sha256(binary.read_bytes()).hexdigest(), "images": None}
    variables = {
        "k3s_source": source,
        "k3s_install_dir": str(node / "lib"),
        "k3s_bin": str(node / "bin" / "k3s"),
        "k3s_linked_commands": ["n3x-no-such-command-kubectl"],
        "k3s_state": "prepared",  # the restart handler needs a unit; install.yml alone is tested here
    }
    result = run(["ansible-playbook", "--check", str(playbook), "-e", json.dumps(variables)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "n3x-no-such-command-kubectl" in result.stdout
    assert not node.exists(), "check mode wrote to the node"


@pytest.mark.skipif(os.geteuid() != 0, reason="token.yml sets root ownership, which needs root")
def test_an_agent_holds_only_the_agent_token(tmp_path):
    """token.yml for an agent: the agent token in its own 0600 file, the server token removed."""
    (tmp_path / "rancher").mkdir()
    server_token = tmp_path / "rancher" / "token"
    server_token.write_text("left-by-an-older-layout")
    agent_token = tmp_path / "rancher" / "agent-token"
    args = token_run(tmp_path, server_token, agent_token, role="agent", init="")
    result = run([*args, "-e", "k3s_token=server-secret-0123456789", "-e", "k3s_agent_token=agent-secret-0123456789"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert not server_token.exists()
    assert agent_token.read_text() == "agent-secret-0123456789"
    assert oct(agent_token.stat().st_mode & 0o777) == "0o600"
    for secret in ("server-secret-0123456789", "agent-secret-0123456789"):
        assert secret not in result.stdout + result.stderr
