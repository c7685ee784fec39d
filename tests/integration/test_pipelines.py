"""The CI pipelines list exactly what the suite knows, and the validators really check them."""

import ast
import re
import subprocess

import pytest
import yaml

from tests import pipelines

# The main venv's validators (requirements.txt), also when another venv runs the tests.
TOOLS = pipelines.REPO / ".venv" / "bin"
GITLAB, GITHUB = (yaml.safe_load(path.read_text()) for path in pipelines.PIPELINES)


def test_github_jobs_list_exactly_the_suites_scenarios_and_profiles():
    jobs = GITHUB["jobs"]
    assert jobs["scenario"]["strategy"]["matrix"]["scenario"] == pipelines.vm_scenarios()
    assert jobs["k3s"]["strategy"]["matrix"]["scenario"] == pipelines.k3s_scenarios()
    assert jobs["lab"]["strategy"]["matrix"]["profile"] == pipelines.profiles()


def test_gitlab_jobs_list_exactly_the_suites_scenarios_and_profiles():
    assert GITLAB["scenario"]["parallel"]["matrix"] == [{"SCENARIO": pipelines.vm_scenarios()}]
    assert GITLAB["k3s"]["parallel"]["matrix"] == [{"SCENARIO": pipelines.k3s_scenarios()}]
    assert GITLAB["lab"]["parallel"]["matrix"] == [{"PROFILE": pipelines.profiles()}]


def test_every_scenario_of_the_suite_has_a_pipeline_job():
    # A scenario added to tests/scenarios/test_molecule.py cannot be left out of CI.
    listed = set(pipelines.vm_scenarios()) | set(pipelines.k3s_scenarios())
    assert listed == set(pipelines.suite.SCENARIOS)
    assert "l2-vlans" in pipelines.vm_scenarios()
    assert "l4-vlans-uefi" in pipelines.k3s_scenarios()


def test_each_generated_list_appears_once_per_file():
    for path in pipelines.PIPELINES:
        assert pipelines.blocks(path.read_text()) == dict.fromkeys(pipelines.LISTS, 1), path


def test_ci_matrix_restores_a_list_someone_edited_by_hand():
    text = pipelines.PIPELINES[1].read_text()
    stale = text.replace("          - l2-vlans\n", "", 1)
    assert stale != text
    assert pipelines.render(stale) == text


def noxfile_cores():
    tree = ast.parse((pipelines.REPO / "noxfile.py").read_text())
    (value,) = [n.value for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ANSIBLE_CORE"]
    return ast.literal_eval(value)


def test_ansible_core_jobs_cover_every_claimed_minor():
    cores = noxfile_cores()
    claimed = yaml.safe_load((pipelines.REPO / "meta/runtime.yml").read_text())["requires_ansible"]
    floor = re.fullmatch(r">=(\d+\.\d+)\.\d+", claimed).group(1)
    assert min(cores, key=lambda v: tuple(map(int, v.split(".")))) == floor
    assert [(i["core"], i["python"]) for i in GITHUB["jobs"]["ansible-core"]["strategy"]["matrix"]["include"]] == list(cores.items())
    gitlab = [(core, entry["PYTHON"]) for entry in GITLAB["ansible-core"]["parallel"]["matrix"] for core in entry["CORE"]]
    assert gitlab == list(cores.items())


@pytest.mark.parametrize(
    ("argv", "path", "breakage"),
    [
        (["check-jsonschema", "--builtin-schema", "vendor.github-workflows"], pipelines.PIPELINES[1], ("runs-on: ubuntu-24.04", "runs_on: ubuntu-24.04")),
        (["check-jsonschema", "--builtin-schema", "vendor.gitlab-ci"], pipelines.PIPELINES[0], ("  when: always\n", "  when: sometimes\n")),
        (["actionlint"], pipelines.PIPELINES[1], ("needs: fast", "needs: nosuchjob")),
    ],
    ids=["github-schema", "gitlab-schema", "actionlint"],
)
def test_validators_pass_the_pipeline_and_reject_a_broken_copy(tmp_path, argv, path, breakage):
    tool = [str(TOOLS / argv[0]), *argv[1:]]
    assert subprocess.run([*tool, str(path)], capture_output=True, text=True, check=False).returncode == 0
    broken = tmp_path / path.name
    broken.write_text(path.read_text().replace(*breakage, 1))
    result = subprocess.run([*tool, str(broken)], capture_output=True, text=True, check=False)
    assert result.returncode != 0, result.stdout
