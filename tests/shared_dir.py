"""Where the team's shared directory (../shared: upstream reference data) is.

Next to the checkout in the usual layout (/work/main and /work/shared), but a worktree
(/work/wt/BRANCH) or a fresh clone elsewhere (CI) has no ../shared of its own. Looked for,
in order: N3X_SHARED_DIR; a `shared` directory beside the checkout or beside any of its
parent directories; beside the main worktree of this repository (git's common dir); beside
the repository this one was cloned from (a local `origin`).
"""

import os
import pathlib
import subprocess
from urllib.parse import urlsplit

REPO = pathlib.Path(__file__).resolve().parent.parent


def _git(*args):
    try:
        result = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def candidates():
    given = os.environ.get("N3X_SHARED_DIR")
    if given:
        yield pathlib.Path(given)
        return
    for parent in REPO.parents:
        yield parent / "shared"
    common = _git("rev-parse", "--path-format=absolute", "--git-common-dir")
    if common:
        yield pathlib.Path(common).parent.parent / "shared"
    origin = _git("config", "--get", "remote.origin.url")
    if origin.startswith(("/", "file://")):
        yield pathlib.Path(urlsplit(origin).path if origin.startswith("file://") else origin).parent / "shared"


def shared_file(relative):
    """The path of a file in the shared directory; raises FileNotFoundError naming where it looked."""
    looked = []
    for directory in candidates():
        path = directory / relative
        if path.is_file():
            return path
        looked.append(str(path))
    raise FileNotFoundError(f"{relative} is in none of {', '.join(dict.fromkeys(looked))}; set N3X_SHARED_DIR to the shared directory")
