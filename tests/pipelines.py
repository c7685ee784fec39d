"""What the CI pipelines run, taken from the suite's own lists (one source of truth).

The scenario lists come from tests/scenarios/test_molecule.py (SCENARIOS, NEEDS_K3S), the
profiles from profiles/*.yml. scripts/ci-matrix writes them into .gitlab-ci.yml and
.github/workflows/n3x.yml between `# BEGIN n3x:LIST` and `# END n3x:LIST` lines, and
tests/integration/test_pipelines.py checks that both files list exactly these.
"""

import pathlib
import re

from tests.scenarios import test_molecule as suite

REPO = pathlib.Path(__file__).resolve().parents[1]
PIPELINES = (REPO / ".gitlab-ci.yml", REPO / ".github" / "workflows" / "n3x.yml")
BLOCK = re.compile(r"^(?P<indent>[ \t]*)# BEGIN n3x:(?P<name>[a-z0-9-]+)[^\n]*\n(?P<body>.*?)^[ \t]*# END n3x:(?P=name)\n", re.MULTILINE | re.DOTALL)


def vm_scenarios():
    """The scenarios that need only QEMU, lower layers first (slow ones included)."""
    return [s for s in suite.SCENARIOS if s not in suite.NEEDS_K3S]


def k3s_scenarios():
    """The scenarios that install a real k3s (the pipelines fetch the pinned release)."""
    return [s for s in suite.SCENARIOS if s in suite.NEEDS_K3S]


def profiles():
    """Every shipped profile: the pipelines run scripts/lab-up and scripts/lab-down with each."""
    return sorted(path.stem for path in (REPO / "profiles").glob("*.yml"))


LISTS = {"vm-scenarios": vm_scenarios, "k3s-scenarios": k3s_scenarios, "profiles": profiles}


def render(text):
    """The pipeline file's text with every generated list as the suite has it now."""

    def fill(match):
        name = match.group("name")
        if name not in LISTS:
            raise ValueError(f"unknown generated list n3x:{name}; known: {', '.join(LISTS)}")
        indent = match.group("indent")
        items = "".join(f"{indent}- {item}\n" for item in LISTS[name]())
        return f"{indent}# BEGIN n3x:{name} (scripts/ci-matrix writes this list)\n{items}{indent}# END n3x:{name}\n"

    return BLOCK.sub(fill, text)


def blocks(text):
    """{list name: number of generated blocks} in a pipeline file."""
    found = {}
    for match in BLOCK.finditer(text):
        found[match.group("name")] = found.get(match.group("name"), 0) + 1
    return found
