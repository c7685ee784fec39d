"""Helpers for the lab scenarios' testinfra tests."""

import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))


def ip_json(host, *args):
    """`ip -j ARGS` on the host, parsed."""
    result = host.run("ip -j " + " ".join(args))
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout or "[]")
