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


PING_MARK = "=== n3x ping rc"


def ping_each(host, targets, count=2, interval=0.2, wait=2):
    """Ping every (interface, address) from host at once: {(interface, address): (rc, output)}.

    One command for all of them, so the pings overlap instead of adding up their timeouts,
    and the guest runs one SSH command (about 0.3 s each under TCG) instead of one per peer.
    """
    runs = [
        f"{{ ping -c {count} -i {interval} -W {wait} -I {interface} {address} > $d/{i} 2>&1; echo $? > $d/{i}.rc; }} &"
        for i, (interface, address) in enumerate(targets)
    ]
    report = " ".join(f'echo "{PING_MARK} $(cat $d/{i}.rc)"; cat $d/{i};' for i in range(len(targets)))
    result = host.run(f"d=$(mktemp -d) || exit 1; {' '.join(runs)} wait; {report} rm -r $d")
    assert result.rc == 0, result.stderr
    chunks = result.stdout.split(PING_MARK + " ")[1:]
    assert len(chunks) == len(targets), result.stdout
    outcomes = {}
    for target, chunk in zip(targets, chunks, strict=True):
        rc, _, output = chunk.partition("\n")
        outcomes[tuple(target)] = (int(rc), output)
    return outcomes
