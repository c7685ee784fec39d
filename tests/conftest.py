"""Make this checkout importable as ansible_collections.n3x.cluster for plain pytest."""

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
COLLECTIONS = REPO / ".collections"
_link = COLLECTIONS / "ansible_collections" / "n3x" / "cluster"
if not _link.exists():
    _link.parent.mkdir(parents=True, exist_ok=True)
    _link.symlink_to(REPO)
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))
