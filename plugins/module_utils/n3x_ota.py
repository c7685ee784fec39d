# Copyright: n3x developers
# MIT License
"""Staged over-the-air rollout: the plan (a canary, then batches), each node's A/B state and
verdict, and the per-node report. playbooks/ota.yml uses these through filters and the
swupdate_state module; nothing here imports Ansible.

A rollout stops at the first node that is not updated (install failed, the new slot rolled
back, or it never answered): the batch it is in finishes its nodes' updates (a node is never
left with an installed but unbooted slot), and no node of a later batch is touched.
"""

from __future__ import annotations

import re

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_swupdate as swu

RESULTS = ("updated", "rolled-back", "failed", "untouched")
_PERCENT = re.compile(r"([1-9][0-9]*)\s*%")


class OtaError(Exception):
    pass


def batch_size(batch, fleet):
    """Nodes per batch: an int, or 'N%' of the whole fleet (rounded up), at least 1."""
    if isinstance(batch, bool):
        raise OtaError(f"batch {batch!r} is not a size or a percentage")
    text = str(batch).strip()
    match = _PERCENT.fullmatch(text)
    if match:
        percent = int(match.group(1))
        if percent > 100:
            raise OtaError(f"batch {text} is over 100%")
        return max(1, -(-fleet * percent // 100))
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise OtaError(f"batch {batch!r} must be a number of nodes (1 or more) or a percentage such as 25%")


def plan_rollout(nodes, canary=1, batch="25%"):
    """{'nodes', 'batches': [[node, ...], ...], 'sizes': [...], 'canary': bool} in the given node order.

    The first batch is the canary (`canary` nodes; 0 for none), the rest come in batches of
    `batch` nodes (a size or a percentage of the whole fleet). `sizes` is Ansible's `serial`.
    """
    nodes = list(nodes)
    if len(set(nodes)) != len(nodes):
        raise OtaError("a node appears twice in the rollout")
    if not nodes:
        raise OtaError("no nodes to update")
    if isinstance(canary, bool) or not str(canary).isdigit():
        raise OtaError(f"canary {canary!r} must be a number of nodes (0 for none)")
    canary = int(canary)
    size = batch_size(batch, len(nodes))
    batches, rest = [], nodes
    if canary:
        batches.append(rest[:canary])
        rest = rest[canary:]
    while rest:
        batches.append(rest[:size])
        rest = rest[size:]
    return {"nodes": nodes, "batches": batches, "sizes": [len(b) for b in batches], "canary": bool(canary)}


def node_state(cmdline, grubenv_text):
    """A node's A/B state from /proc/cmdline and its grubenv (file or `grub-editenv list`)."""
    env = swu.parse_grubenv(grubenv_text)
    slot = swu.running_slot(cmdline)
    return {
        "slot": slot,
        "version": env.get(swu.VERSION_VARIABLE.format(slot=slot)),
        "image": env.get(swu.IMAGE_VARIABLE.format(slot=slot)),
        # GRUB's next boot: a trial of the other slot while an update waits for confirmation.
        "next_slot": env.get(swu.SLOT_VARIABLE, slot),
        "pending": env.get("upgrade_available") == "1",
        # swupdate's update state marker (core/state.c): 1 installed, 3 failed, 7 in progress.
        "ustate": env.get("ustate"),
        "env": env,
    }


def verdict(before, after, installed_slot):
    """'updated', 'rolled-back' or 'failed' for a node that installed to `installed_slot` and rebooted.

    Updated: it runs the new slot and confirmed it. Rolled back: it runs its old slot again
    (GRUB's boot counter or a failed health check sent it back). Anything else - the new slot
    runs but is still unconfirmed - is failed.
    """
    pending = str(after.get("pending")).lower() in ("true", "1")
    if after["slot"] == installed_slot and not pending:
        return "updated"
    if after["slot"] == before["slot"] and not pending:
        return "rolled-back"
    return "failed"


def node_result(outcome):
    """(result, reason) of one node's update record {'before', 'started', 'installed_slot', 'after', 'error'}."""
    if not outcome or not outcome.get("started"):
        return "untouched", ""
    if outcome.get("error"):
        return "failed", str(outcome["error"])
    before, after = outcome.get("before"), outcome.get("after")
    if not (before and after and outcome.get("installed_slot")):
        return "failed", "the update did not finish"
    result = verdict(before, after, outcome["installed_slot"])
    reason = {
        "updated": "",
        "rolled-back": f"slot {outcome['installed_slot']} was not confirmed (health check or boot failed): back on slot {after['slot']}",
        "failed": f"slot {after['slot']} runs unconfirmed",
    }[result]
    return result, reason


def report(nodes, plan, results):
    """Per-node rows in rollout order: batch, slot and version before and after, result, reason.

    results: {node: {'before': state, 'installed_slot': slot, 'after': state, 'error': msg,
    'seconds': {...}}}; a node without one is 'untouched'.
    """
    batch_of = {}
    for index, batch in enumerate(plan["batches"]):
        label = "canary" if index == 0 and plan.get("canary") else str(index + 1 - bool(plan.get("canary")))
        batch_of.update(dict.fromkeys(batch, label))
    rows = []
    for node in nodes:
        outcome = results.get(node) or {}
        before, after = outcome.get("before") or {}, outcome.get("after") or {}
        result, reason = node_result(outcome)
        rows.append(
            {
                "node": node,
                "batch": batch_of.get(node, "-"),
                "slot_before": before.get("slot"),
                "version_before": before.get("version"),
                "slot": after.get("slot", before.get("slot")),
                "version": after.get("version", before.get("version")),
                "result": result,
                "reason": reason,
                "seconds": outcome.get("seconds", {}),
            }
        )
    return rows


def report_text(rows):
    """The report as an aligned text table."""
    header = ("node", "batch", "slot", "version", "result", "reason")
    lines = [header]
    for row in rows:
        slot = f"{row['slot_before'] or '?'} -> {row['slot'] or '?'}" if row["result"] != "untouched" else row["slot"] or "?"
        version = f"{row['version_before'] or '?'} -> {row['version'] or '?'}" if row["result"] != "untouched" else row["version"] or "?"
        lines.append((row["node"], str(row["batch"]), slot, version, row["result"], row["reason"]))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines) + "\n"
