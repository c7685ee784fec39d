"""The results matrix, built from the JUnit XML that scripts/test (or a CI pipeline) wrote.

    python3 -m tests.report DIR      reads DIR/**/*.xml, writes DIR/report.md and DIR/report.html

Where the results come from:
- scenarios.xml (tests/scenarios): one test per molecule scenario (test_scenario[NAME]) and
  per lab-up profile (test_lab_up_and_down[PROFILE]): status, wall time, skip reason;
- molecule/NAME.xml: the testinfra checks inside scenario NAME, one test per check, node and
  parameter, with the figures they measure as properties (record_property);
- every other file (unit and integration tests, ansible-core-X.xml): counted per suite.
A CI pipeline's report job gets each job's files in a directory of its own; any layout works.

Rows of the matrix are the checks (CHECKS maps test functions to them; a test function that
no row names gets a row of its own), columns the scenarios with their profile and boot mode.
Needs only the standard library and PyYAML.
"""

import ast
import dataclasses
import html
import pathlib
import re
import sys
import xml.etree.ElementTree as ET

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]

# (row, test functions): the checks of the original's Test Coverage Matrix first.
CHECKS = [
    ("Interface exists and is up", ["test_interfaces_exist_and_up", "test_eth1_is_up_with_carrier", "test_nics_named_by_kernel_order"]),
    (
        "Addresses: exactly the profile's, none on a wrong interface (no cross-contamination)",
        ["test_exactly_the_profile_addresses", "test_network_from_the_profile"],
    ),
    ("VLAN ids", ["test_vlan_ids", "test_each_node_tags_its_own_vlans"]),
    ("Peers reachable on every network (cluster and storage ping)", ["test_peers_reachable_on_every_role", "test_peer_answers_on_the_lab_segment"]),
    ("Routes via the right interface", ["test_routes_via_the_right_interface"]),
    ("DHCP: reserved addresses leased by MAC", ["test_dhcp_addresses_are_leases", "test_dhcp_server_leased_the_reserved_addresses"]),
    ("Bond state (mode, miimon, delays, primary)", ["test_bond"]),
    ("Bond failover and failback under a cable pull", ["test_failover_and_failback"]),
    ("Cable pull cuts the link, plugging restores it", ["test_cable_pull_cuts_the_link_and_plugging_restores_it"]),
    (
        "VLAN misconfiguration detected (mismatched VLANs isolated, matching one reaches)",
        ["test_reachability_follows_vlan_ids", "test_the_wire_works_with_a_matching_vlan"],
    ),
    (
        "netem delay and loss, tbf and htb measured",
        [
            "test_latency_rises_with_netem_delay",
            "test_loss_matches_netem_rate",
            "test_tbf_bounds_throughput",
            "test_htb_with_netem_child",
            "test_latency_recovers_when_constraints_go",
        ],
    ),
    (
        "VM boots: SSH, no failed units, cloud kernel, Debian 12, boot mode",
        [
            "test_ssh_works",
            "test_multi_user_target_reached",
            "test_system_running_without_failed_units",
            "test_cloud_kernel",
            "test_debian_12",
            "test_sshd_listening",
            "test_boot_mode",
            "test_boot_to_ssh_is_measured",
        ],
    ),
    (
        "k3s service: versioned binary, unit, config and token 0600, API, node address",
        [
            "test_binary_present_and_versioned",
            "test_unit_active_and_enabled",
            "test_config_from_the_profile_mode_0600",
            "test_token_file_0600_and_never_on_a_command_line",
            "test_server_api_answers_on_6443",
            "test_node_registered_with_its_profile_address",
        ],
    ),
    (
        "k3s cluster formation (Ready, InternalIP, join order, etcd, CoreDNS)",
        [
            "test_every_node_ready",
            "test_node_internal_ip_is_the_profile_cluster_address",
            "test_servers_and_agents_have_their_roles",
            "test_joined_in_order_init_server_then_servers_then_agents",
            "test_etcd_healthy_with_every_server_a_member",
            "test_coredns_and_local_path_provisioner_running",
        ],
    ),
]
ROW_OF = {name: row for row, names in CHECKS for name in names}
STATUSES = ("fail", "pass", "skip")


@dataclasses.dataclass
class Case:
    suite: str
    name: str
    status: str  # pass, fail, skip
    seconds: float
    message: str = ""
    properties: dict = dataclasses.field(default_factory=dict)

    @property
    def function(self):
        return self.name.split("[", 1)[0]

    @property
    def param(self):
        return self.name[len(self.function) + 1 : -1] if "[" in self.name else ""


@dataclasses.dataclass
class Cell:
    status: str  # pass, fail, skip, none (not run), na (not applicable)
    seconds: float = 0.0
    reason: str = ""


def read_junit(path):
    """Every test case of a JUnit file."""
    cases = []
    # JUnit that this suite's own runs wrote; expat refuses entity expansion bombs.
    root = ET.parse(path).getroot()  # noqa: S314
    for case in root.iter("testcase"):
        status, message = "pass", ""
        for tag, kind in (("failure", "fail"), ("error", "fail"), ("skipped", "skip")):
            found = case.find(tag)
            if found is not None:
                status = kind
                message = found.get("message") or (found.text or "")
                break
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        cases.append(Case(path.stem, case.get("name", ""), status, float(case.get("time") or 0), one_line(message), properties))
    return cases


def one_line(text, limit=240):
    text = re.sub(r"^Skipped: ", "", " ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def scenario_info(name, repo=REPO):
    """Profile, boot mode, nodes and the checks a scenario's verifier runs (from its files)."""
    path = repo / "molecule" / name / "molecule.yml"
    info = {"profile": "", "boot": "direct", "nodes": [], "checks": set(), "groups": {}}
    if not path.is_file():
        return info
    config = yaml.safe_load(path.read_text()) or {}
    env = {**((config.get("ansible") or {}).get("env") or {}), **((config.get("verifier") or {}).get("env") or {})}
    profile = env.get("N3X_PROFILE", "")
    # A scenario's own profile file (${MOLECULE_SCENARIO_DIRECTORY}/profile.yml): its name.
    info["profile"] = "own profile.yml" if "${MOLECULE_SCENARIO_DIRECTORY}" in profile else profile
    info["boot"] = env.get("N3X_LAB_BOOT_MODE", "direct")
    info["nodes"] = [p["name"] for p in config.get("platforms") or []]
    base = yaml.safe_load((repo / ".config/molecule/config.yml").read_text()) or {}
    directory = (config.get("verifier") or {}).get("directory") or (base.get("verifier") or {}).get("directory", "tests")
    tests = (path.parent / directory).resolve()
    for test_file in sorted(tests.glob("test_*.py")):
        tree = ast.parse(test_file.read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
        info["checks"] |= names
        # A check no CHECKS row names goes in its test file's row, labelled by its docstring.
        label = (ast.get_docstring(tree) or test_file.stem).splitlines()[0].rstrip(".")
        info["groups"].update(dict.fromkeys(names - set(ROW_OF), label))
    return info


class Results:
    def __init__(self, directory, repo=REPO):
        self.repo = repo
        self.scenarios = {}  # name -> Case (the scenario as one test)
        self.labs = {}  # profile -> Case
        self.checks = {}  # scenario -> [Case]
        self.suites = {}  # suite name -> [Case]
        for path in sorted(pathlib.Path(directory).rglob("*.xml")):
            try:
                cases = read_junit(path)
            except ET.ParseError as exc:
                print(f"report: {path}: not JUnit XML ({exc}); left out", file=sys.stderr)
                continue
            if path.parent.name == "molecule":
                self.checks.setdefault(path.stem, []).extend(cases)
                continue
            for case in cases:
                if case.function == "test_scenario":
                    self.scenarios[case.param] = case
                elif case.function == "test_lab_up_and_down":
                    self.labs[case.param] = case
                else:
                    self.suites.setdefault(path.stem, []).append(case)
        self.info = {name: scenario_info(name, repo) for name in self.columns()}

    def columns(self):
        """Scenarios that ran or were skipped, in run order."""
        return list(dict.fromkeys([*self.scenarios, *self.checks]))

    def rows(self):
        """Row labels: the catalogue's rows that any scenario has, then one per other check."""
        seen = {case.function for cases in self.checks.values() for case in cases}
        for name in self.columns():
            seen |= self.info[name]["checks"]
        named = [row for row, names in CHECKS if seen & set(names)]
        others = sorted({self.row_of(f) for f in seen} - set(named))
        return named, others

    def row_of(self, function):
        if function in ROW_OF:
            return ROW_OF[function]
        return next((info["groups"][function] for info in self.info.values() if function in info["groups"]), function)

    def functions(self, row):
        known = {f for info in self.info.values() for f in info["checks"]} | {c.function for cases in self.checks.values() for c in cases}
        return [f for f in known if self.row_of(f) == row] or [row]

    def node_of(self, scenario, case):
        """The node a testinfra case ran on (its id starts with ansible://NODE)."""
        param = case.param.removeprefix("ansible://")
        nodes = sorted(self.info[scenario]["nodes"], key=len, reverse=True)
        return next((n for n in nodes if param == n or param.startswith(n + "-")), param)

    def cell(self, row, scenario):
        functions = set(self.functions(row))
        cases = [c for c in self.checks.get(scenario, []) if c.function in functions]
        if cases:
            seconds = sum(c.seconds for c in cases)
            failed = [c for c in cases if c.status == "fail"]
            if failed:
                return Cell("fail", seconds, "; ".join(f"{self.node_of(scenario, c)}: {c.message}" for c in failed[:3]))
            passed = [c for c in cases if c.status == "pass"]
            if passed:
                nodes = sorted({self.node_of(scenario, c) for c in passed})
                skipped = sorted({c.message for c in cases if c.status == "skip"})
                note = f" (skipped elsewhere: {'; '.join(skipped)})" if skipped else ""
                return Cell("pass", seconds, f"{len(passed)} checks on {', '.join(nodes)}{note}")
            return Cell("skip", seconds, "; ".join(sorted({c.message for c in cases})))
        if not functions & self.info[scenario]["checks"]:
            return Cell("na")
        outer = self.scenarios.get(scenario)
        if outer is None or outer.status == "pass":
            return Cell("none", 0.0, "no result of this check")
        if outer.status == "skip":
            return Cell("skip", 0.0, "the whole scenario was skipped")
        return Cell("none", 0.0, "not reached: the scenario failed before its checks ran")

    def scenario_cell(self, scenario):
        case = self.scenarios.get(scenario)
        if case is None:
            return Cell("none", 0.0, "no result")
        return Cell(case.status, case.seconds, case.message)

    def l4(self):
        """{profile: {boot mode: Cell}} of the l4-PROFILE-BOOT scenarios."""
        grid = {}
        for name in self.scenarios:
            found = re.fullmatch(r"l4-(.+)-(direct|uefi)", name)
            if found:
                grid.setdefault(found.group(1), {})[found.group(2)] = self.scenario_cell(name)
        return grid

    def figures(self):
        """(scenario, node, check, name, value) of every measured figure."""
        rows = []
        for scenario, cases in self.checks.items():
            for case in cases:
                for name, value in case.properties.items():
                    rows.append((scenario, self.node_of(scenario, case), case.function, name, value))
        return rows

    def suite_counts(self):
        counts = {}
        for suite, cases in sorted(self.suites.items()):
            tally = {s: sum(c.status == s for c in cases) for s in STATUSES}
            counts[suite] = (tally, sum(c.seconds for c in cases))
        return counts


# ---------------------------------------------------------------- rendering -------

MARK = {"pass": "pass", "fail": "FAIL", "skip": "skip", "none": "not run", "na": "–"}


def seconds_text(value):
    return f"{value / 60:.1f} min" if value >= 120 else f"{value:.1f} s"


def header(results, scenario):
    info = results.info[scenario]
    parts = [scenario, info["profile"] or "no profile"]
    if info["boot"] != "direct":
        parts.append(info["boot"])
    return parts


def markdown(results):
    out = ["# n3x test results", ""]
    columns = results.columns()
    named, others = results.rows()
    if columns:
        out += ["## Checks × scenarios", "", "Each cell: result, wall time of the check's tests, and why (skips, failures).", ""]
        out.append("| check | " + " | ".join(" / ".join(header(results, s)) for s in columns) + " |")
        out.append("|---|" + "---|" * len(columns))

        def md_cell(cell):
            if cell.status == "na":
                return "–"
            text = MARK[cell.status] + (f" {seconds_text(cell.seconds)}" if cell.seconds >= 0.05 else "")
            return text + (f": {cell.reason}" if cell.reason and cell.status != "pass" else "")

        out.append("| **whole scenario** (molecule test) | " + " | ".join(md_cell(results.scenario_cell(s)) for s in columns) + " |")
        for row in named + others:
            out.append(f"| {row} | " + " | ".join(md_cell(results.cell(row, s)).replace("|", "\\|") for s in columns) + " |")
        out.append("")
    grid = results.l4()
    if grid:
        out += ["## L4 cluster: profiles × boot modes", "", "| profile | direct | uefi |", "|---|---|---|"]
        for profile, modes in sorted(grid.items()):
            cells = []
            for mode in ("direct", "uefi"):
                cell = modes.get(mode, Cell("none"))
                timing = f" {seconds_text(cell.seconds)}" if cell.seconds >= 0.05 else ""
                cells.append(MARK[cell.status] + timing + (f": {cell.reason}" if cell.reason else ""))
            out.append(f"| {profile} | " + " | ".join(cells) + " |")
        out.append("")
    if results.labs:
        out += ["## lab-up and lab-down per profile", "", "| profile | result |", "|---|---|"]
        for profile, case in results.labs.items():
            out.append(f"| {profile} | {MARK[case.status]} {seconds_text(case.seconds)}{': ' + case.message if case.message else ''} |")
        out.append("")
    figures = results.figures()
    if figures:
        out += ["## Measured figures", "", "| scenario | node | check | figure | value |", "|---|---|---|---|---|"]
        out += [f"| {s} | {n} | {c} | {k} | {v} |" for s, n, c, k, v in figures]
        out.append("")
    counts = results.suite_counts()
    if counts:
        out += ["## Tests without VMs", "", "| suite | passed | failed | skipped | time |", "|---|---|---|---|---|"]
        out += [f"| {suite} | {t['pass']} | {t['fail']} | {t['skip']} | {seconds_text(sec)} |" for suite, (t, sec) in counts.items()]
        out.append("")
    return "\n".join(out)


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:4px 6px;vertical-align:top}
th{background:#f3f3f3;font-weight:600}
thead th{font-size:12px}
td.check{max-width:22em}
td.pass{background:#d9f2d9}td.fail{background:#f8d0d0;font-weight:600}
td.skip{background:#eee;color:#555}td.none{background:#fff6d5;color:#555}td.na{color:#aaa;text-align:center}
small{display:block;font-size:11px;color:#555;max-width:18em;font-weight:normal}
.legend span{display:inline-block;padding:2px 8px;margin-right:6px;border:1px solid #ccc}
"""


def html_cell(cell, detail=True):
    if cell.status == "na":
        return '<td class="na">–</td>'
    text = html.escape(MARK[cell.status]) + (f" {seconds_text(cell.seconds)}" if cell.seconds >= 0.05 else "")
    reason = html.escape(cell.reason)
    small = f"<small>{reason}</small>" if reason and detail and cell.status != "pass" else ""
    return f'<td class="{cell.status}" title="{reason}">{text}{small}</td>'


def render_html(results):
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>n3x test results</title>',
        f"<style>{CSS}</style></head><body>",
        "<h1>n3x test results</h1>",
        '<p class="legend"><span style="background:#d9f2d9">pass</span><span style="background:#f8d0d0">FAIL</span>'
        '<span style="background:#eee">skip</span><span style="background:#fff6d5">not run</span>'
        " Each cell: result and the wall time of the check's tests; hover for the nodes or the reason.</p>",
    ]
    columns = results.columns()
    named, others = results.rows()
    if columns:
        out.append("<h2>Checks × scenarios</h2><table><thead><tr><th>check</th>")
        for s in columns:
            name, *rest = header(results, s)
            out.append(f"<th>{html.escape(name)}<br><small>{html.escape(' · '.join(rest))}</small></th>")
        out.append("</tr></thead><tbody>")
        out.append('<tr><th class="check">whole scenario (molecule test)</th>' + "".join(html_cell(results.scenario_cell(s)) for s in columns) + "</tr>")
        for row in named:
            out.append(f'<tr><td class="check">{html.escape(row)}</td>' + "".join(html_cell(results.cell(row, s)) for s in columns) + "</tr>")
        if others:
            out.append(f'<tr><th colspan="{len(columns) + 1}">other checks</th></tr>')
            for row in others:
                out.append(f'<tr><td class="check">{html.escape(row)}</td>' + "".join(html_cell(results.cell(row, s)) for s in columns) + "</tr>")
        out.append("</tbody></table>")
    grid = results.l4()
    if grid:
        out.append("<h2>L4 cluster: profiles × boot modes</h2><table><tr><th>profile</th><th>direct</th><th>uefi</th></tr>")
        for profile, modes in sorted(grid.items()):
            out.append(f"<tr><th>{html.escape(profile)}</th>" + "".join(html_cell(modes.get(m, Cell("none"))) for m in ("direct", "uefi")) + "</tr>")
        out.append("</table>")
    if results.labs:
        out.append("<h2>lab-up and lab-down per profile</h2><table><tr><th>profile</th><th>result</th></tr>")
        for profile, case in results.labs.items():
            out.append(f"<tr><th>{html.escape(profile)}</th>{html_cell(Cell(case.status, case.seconds, case.message))}</tr>")
        out.append("</table>")
    figures = results.figures()
    if figures:
        out.append("<h2>Measured figures</h2><table><tr><th>scenario</th><th>node</th><th>check</th><th>figure</th><th>value</th></tr>")
        for row in figures:
            out.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
        out.append("</table>")
    counts = results.suite_counts()
    if counts:
        out.append("<h2>Tests without VMs</h2><table><tr><th>suite</th><th>passed</th><th>failed</th><th>skipped</th><th>time</th></tr>")
        for suite, (tally, sec) in counts.items():
            status = "fail" if tally["fail"] else "pass"
            cells = f'<td class="{status}">{tally["pass"]}</td><td>{tally["fail"]}</td><td>{tally["skip"]}</td><td>{seconds_text(sec)}</td>'
            out.append(f"<tr><th>{html.escape(suite)}</th>{cells}</tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    directory = pathlib.Path(argv[1])
    results = Results(directory)
    (directory / "report.md").write_text(markdown(results) + "\n")
    (directory / "report.html").write_text(render_html(results) + "\n")
    print(f"report: {directory / 'report.md'} and {directory / 'report.html'} ({len(results.columns())} scenarios, {len(results.figures())} measured figures)")


if __name__ == "__main__":
    main(sys.argv)
