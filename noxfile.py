"""The no-VM tests against every ansible-core minor that meta/runtime.yml claims.

    nox -s ansible_core            every claimed minor (what the CI pipelines run)
    nox -s "ansible_core(2.17)"    one of them

Each minor gets its own venv with that ansible-core and the test tools pinned in
requirements.txt. The collections the roles use (community.general, community.crypto) come
from the main venv's `ansible` package, one installed set for every minor: the session's
site-packages links to it, so ansible.cfg's collections_path finds n3x.cluster as it does
for the main suite.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import nox

REPO = pathlib.Path(__file__).resolve().parent
# Each minor meta/runtime.yml claims, and the Python it runs on: 2.20 and newer need 3.12.
ANSIBLE_CORE = {"2.17": "3.11", "2.18": "3.11", "2.19": "3.11", "2.20": "3.12", "2.21": "3.12"}
# The test tools, at the versions requirements.txt pins for the main suite.
TOOLS = ("pytest", "PyYAML", "netaddr", "jmespath", "hypothesis")

nox.options.default_venv_backend = "venv"
# Inside .venv: every linter and the collection build already leave it out.
nox.options.envdir = str(REPO / ".venv" / "nox")
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["ansible_core"]


def interpreter(version):
    """pythonX.Y from PATH when it runs, else pyenv's (where this machine kind keeps 3.12)."""
    name = f"python{version}"
    found = shutil.which(name)
    if found and subprocess.run([found, "-c", ""], capture_output=True, check=False).returncode == 0:
        return version
    candidates = sorted(pathlib.Path.home().glob(f".pyenv/versions/{version}.*/bin/{name}"), reverse=True)
    return str(candidates[0]) if candidates else version


def pinned(names):
    wanted = {name.lower() for name in names}
    pins = []
    for line in (REPO / "requirements.txt").read_text().splitlines():
        found = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if found and found.group(1).lower() in wanted:
            pins.append(line.strip())
    missing = wanted - {pin.split("==")[0].lower() for pin in pins}
    if missing:
        sys.exit(f"noxfile.py: requirements.txt pins none of {sorted(missing)}")
    return pins


def main_venv_collections():
    found = sorted((REPO / ".venv" / "lib").glob("python3*/site-packages/ansible_collections"))
    if not found:
        sys.exit("noxfile.py: no collections in .venv: run scripts/bootstrap first")
    return found[0]


def link_collections(session):
    site = session.run("python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", silent=True).strip()
    link = pathlib.Path(site) / "ansible_collections"
    if not link.is_symlink():
        link.symlink_to(main_venv_collections(), target_is_directory=True)


@nox.session
@nox.parametrize(("python", "core"), [(interpreter(python), core) for core, python in ANSIBLE_CORE.items()], ids=list(ANSIBLE_CORE))
def ansible_core(session, core):
    session.install(f"ansible-core=={core}.*", *pinned(TOOLS))
    link_collections(session)
    output = pathlib.Path(os.environ.get("N3X_TEST_OUTPUT", REPO / "tests" / "output")) / "junit"
    output.mkdir(parents=True, exist_ok=True)
    session.run(
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--junitxml={output / f'ansible-core-{core}.xml'}",
        "-o",
        f"junit_suite_name=ansible-core-{core}",
        *(session.posargs or ["tests/integration"]),
    )
