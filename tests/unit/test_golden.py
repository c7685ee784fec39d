"""Every shipped profile x lab node renders exactly the reviewed files in golden/.

The test only reads golden/: scripts/update-golden rewrites it in a separate step
(write_golden below), so no run compares the generator's output with itself.
"""

import pathlib

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import load_profile
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_render import node_files

REPO = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
PROFILES = sorted(path.stem for path in (REPO / "profiles").glob("*.yml"))
SERVERS = ["server-1", "server-2"]
ROLES = {"server-1": "server", "server-2": "server", "agent-1": "agent", "agent-2": "agent"}


def rendered(profile_name, node):
    _path, profile = load_profile(profile_name, str(REPO / "profiles"))
    return node_files(profile, node, ROLES[node], servers=SERVERS)


def golden(profile_name, node):
    root = GOLDEN / profile_name / node
    return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}


def write_golden():
    """Rewrite golden/ from the generators (scripts/update-golden); review the diff by hand."""
    for profile_name in PROFILES:
        for node in sorted(ROLES):
            root = GOLDEN / profile_name / node
            for old in sorted(root.rglob("*"), reverse=True) if root.exists() else []:
                old.unlink() if old.is_file() else old.rmdir()
            for path, text in rendered(profile_name, node).items():
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_text(text)


@pytest.mark.parametrize("node", sorted(ROLES))
@pytest.mark.parametrize("profile_name", PROFILES)
def test_rendered_files_match_golden(profile_name, node):
    files, expected = rendered(profile_name, node), golden(profile_name, node)
    assert expected, f"no golden files for {profile_name}/{node}: run scripts/update-golden and review the diff"
    assert sorted(files) == sorted(expected)
    for path, text in files.items():
        assert text == expected[path], f"{profile_name}/{node}/{path} differs from golden"


def test_every_profile_has_golden_files():
    assert sorted(p.name for p in GOLDEN.iterdir()) == PROFILES
