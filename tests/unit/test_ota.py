"""Staged rollout: the plan (canary, batches by size or percentage), node states, verdicts, the report."""

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_ota as ota

NODES = [f"edge-{n}" for n in range(1, 11)]


@pytest.mark.parametrize(
    ("canary", "batch", "sizes"),
    [
        (1, "25%", [1, 3, 3, 3]),  # 25 % of 10 nodes, rounded up
        (1, 4, [1, 4, 4, 1]),
        (1, "4", [1, 4, 4, 1]),
        (0, "50%", [5, 5]),
        (2, "100%", [2, 8]),
        (1, "1%", [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
        (10, 3, [10]),
        (12, 3, [10]),
    ],
)
def test_plan_canary_then_batches(canary, batch, sizes):
    plan = ota.plan_rollout(NODES, canary, batch)
    assert plan["sizes"] == sizes
    assert [node for batch_nodes in plan["batches"] for node in batch_nodes] == NODES
    assert plan["canary"] is bool(canary)
    if canary:
        assert plan["batches"][0] == NODES[: min(canary, len(NODES))]


def test_plan_of_three_nodes():
    assert ota.plan_rollout(["a", "b", "c"], 1, "34%")["batches"] == [["a"], ["b", "c"]]
    assert ota.plan_rollout(["a", "b", "c"], 1, 1)["batches"] == [["a"], ["b"], ["c"]]


@pytest.mark.parametrize(
    ("nodes", "canary", "batch", "message"),
    [
        (NODES, 1, "0", "number of nodes"),
        (NODES, 1, "0%", "number of nodes"),
        (NODES, 1, "101%", "over 100%"),
        (NODES, 1, "-1", "number of nodes"),
        (NODES, 1, True, "not a size"),
        (NODES, 1, "ten", "number of nodes"),
        (NODES, -1, 2, "canary"),
        (NODES, "x", 2, "canary"),
        ([], 1, 2, "no nodes"),
        (["a", "a"], 1, 2, "twice"),
    ],
)
def test_plan_refuses(nodes, canary, batch, message):
    with pytest.raises(ota.OtaError, match=message):
        ota.plan_rollout(nodes, canary, batch)


GRUBENV = (
    "# GRUB Environment Block\nrootfs_slot=b\nrootfs_fallback=a\nupgrade_available=1\nrootfs_a_version=1.0\nrootfs_b_version=2.0\nrootfs_a_image=aa\nustate=1\n"
)


def test_node_state():
    state = ota.node_state("root=PARTLABEL=rootfs_a rw", GRUBENV)
    assert {k: state[k] for k in ("slot", "version", "image", "next_slot", "pending", "ustate")} == {
        "slot": "a",
        "version": "1.0",
        "image": "aa",
        "next_slot": "b",
        "pending": True,
        "ustate": "1",
    }


A, B = {"slot": "a", "pending": False}, {"slot": "b", "pending": False}


@pytest.mark.parametrize(
    ("after", "result"),
    [
        (B, "updated"),
        (A, "rolled-back"),
        ({"slot": "b", "pending": True}, "failed"),
        ({"slot": "a", "pending": True}, "failed"),
        ({"slot": "b", "pending": "False"}, "updated"),
        ({"slot": "b", "pending": "True"}, "failed"),
    ],
)
def test_verdict(after, result):
    assert ota.verdict(A, after, "b") == result


def test_report_stops_at_the_first_node_not_updated():
    nodes = ["n1", "n2", "n3", "n4"]
    plan = ota.plan_rollout(nodes, 1, 2)
    before = {"slot": "a", "version": "1.0", "pending": False}
    results = {
        "n1": {"before": before, "started": True, "installed_slot": "b", "after": {"slot": "b", "version": "2.0", "pending": False}},
        "n2": {"before": before, "started": True, "installed_slot": "b", "after": {"slot": "a", "version": "1.0", "pending": False}},
        "n3": {"before": before, "started": True, "error": "swupdate failed (1 runs): HASH mismatch"},
        "n4": {"before": before},
    }
    rows = ota.report(nodes, plan, results)
    assert [(r["node"], r["batch"], r["result"]) for r in rows] == [
        ("n1", "canary", "updated"),
        ("n2", "1", "rolled-back"),
        ("n3", "1", "failed"),
        ("n4", "2", "untouched"),
    ]
    assert (rows[0]["slot_before"], rows[0]["slot"], rows[0]["version"]) == ("a", "b", "2.0")
    assert "back on slot a" in rows[1]["reason"]
    assert rows[2]["reason"] == "swupdate failed (1 runs): HASH mismatch"
    assert (rows[3]["slot"], rows[3]["version"]) == ("a", "1.0")
    text = ota.report_text(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["node", "batch", "slot", "version", "result", "reason"]
    assert lines[1].split()[:7] == ["n1", "canary", "a", "->", "b", "1.0", "->"]
    assert "untouched" in lines[4]
    assert " -> " not in lines[4]


def test_report_of_an_unfinished_node_is_failed():
    plan = ota.plan_rollout(["n1"], 1, 1)
    rows = ota.report(["n1"], plan, {"n1": {"before": A, "started": True}})
    assert rows[0]["result"] == "failed"
