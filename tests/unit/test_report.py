"""The results matrix, built from the JUnit XML of a real run.

fixtures/report/ holds what `scripts/test -j 2 --scenario l1-vm-boot --scenario l2-vlans
--scenario bond-failover --scenario network-constraints --scenario l4-vlans-uefi` wrote on
the build machine (2026-12-03, TCG, 2 cores): junit/scenarios.xml and junit/molecule/*.xml,
with the captured output (<system-out>, <system-err>) left out to keep it small.
"""

import pathlib
import shutil
import xml.etree.ElementTree as ET

import pytest

from tests import report

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "report"


@pytest.fixture(scope="module")
def results():
    return report.Results(FIXTURE)


def test_columns_are_the_scenarios_of_the_run(results):
    assert set(results.columns()) == {"l1-vm-boot", "l2-vlans", "bond-failover", "network-constraints", "l4-vlans-uefi"}
    assert results.info["l2-vlans"]["profile"] == "vlans"
    assert results.info["l4-vlans-uefi"]["boot"] == "uefi"


def test_every_vm_scenario_passed_with_its_wall_time(results):
    for scenario in ("l1-vm-boot", "l2-vlans", "bond-failover", "network-constraints"):
        cell = results.scenario_cell(scenario)
        assert cell.status == "pass", scenario
        assert cell.seconds > 20, f"{scenario} took {cell.seconds} s: a VM scenario takes longer"


def test_network_checks_of_l2_vlans_pass_on_every_node(results):
    for row in ("Interface exists and is up", "VLAN ids", "Routes via the right interface", "Peers reachable on every network (cluster and storage ping)"):
        cell = results.cell(row, "l2-vlans")
        assert cell.status == "pass", (row, cell)
        assert "server-1, server-2" in cell.reason
        assert cell.seconds > 0
    addresses = next(row for row, _names in report.CHECKS if row.startswith("Addresses"))
    assert results.cell(addresses, "l2-vlans").status == "pass"


def test_a_check_skipped_everywhere_shows_why(results):
    cell = results.cell("DHCP: reserved addresses leased by MAC", "l2-vlans")
    assert cell.status == "skip"
    assert "static addressing" in cell.reason


def test_checks_a_scenario_does_not_have_are_not_applicable(results):
    assert results.cell("VLAN ids", "bond-failover").status == "na"
    assert results.cell("Bond failover and failback under a cable pull", "l2-vlans").status == "na"


def test_bond_failover_and_netem_rows(results):
    assert results.cell("Bond failover and failback under a cable pull", "bond-failover").status == "pass"
    assert results.cell("netem delay and loss, tbf and htb measured", "network-constraints").status == "pass"


def test_a_skipped_scenario_skips_its_checks_with_the_reason(results):
    whole = results.scenario_cell("l4-vlans-uefi")
    assert whole.status == "skip"
    assert "needs a real k3s" in whole.reason
    formation = results.cell("k3s cluster formation (Ready, InternalIP, join order, etcd, CoreDNS)", "l4-vlans-uefi")
    assert (formation.status, formation.reason) == ("skip", "the whole scenario was skipped")
    assert results.l4() == {"vlans": {"uefi": whole}}


def test_measured_figures_come_from_the_checks(results):
    figures = {(scenario, name): value for scenario, _node, _check, name, value in results.figures()}
    assert 0 < float(figures["bond-failover", "loss_window_seconds"]) < 1.0
    assert float(figures["network-constraints", "rtt_ms_netem_delay_50ms"]) > float(figures["network-constraints", "rtt_ms_baseline"]) + 30
    assert 1 <= float(figures["network-constraints", "loss_percent_netem_5"]) <= 9
    assert float(figures["network-constraints", "mbit_s_tbf_10mbit"]) <= 11
    assert float(figures["l1-vm-boot", "boot_to_sshd_seconds"]) > 0


def test_markdown_and_html_show_the_same_cells(tmp_path, results):
    text = report.markdown(results)
    assert "| check | l1-vm-boot / no profile |" in text.replace(" / direct", "")
    assert "## L4 cluster: profiles × boot modes" in text
    assert "| vlans | not run | skip" in text
    page = report.render_html(results)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page
    assert "http" not in page.split("<body>")[1]
    assert page.count('<td class="fail"') == 0
    assert page.count('<td class="pass"') >= 10


def test_a_failure_shows_the_node_and_the_message(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(FIXTURE, copy)
    inner = copy / "junit" / "molecule" / "l2-vlans.xml"
    tree = ET.parse(inner)  # noqa: S314 - the committed fixture
    (case,) = [c for c in tree.iter("testcase") if c.get("name") == "test_vlan_ids[ansible://server-2]"]
    ET.SubElement(case, "failure", message="eth1.200 carries VLAN 201, want 200").text = "AssertionError"
    tree.write(inner)
    cell = report.Results(copy).cell("VLAN ids", "l2-vlans")
    assert cell.status == "fail"
    assert cell.reason == "server-2: eth1.200 carries VLAN 201, want 200"


def test_main_writes_both_files(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(FIXTURE, copy)
    report.main(["report", str(copy)])
    assert (copy / "report.md").read_text().startswith("# n3x test results")
    assert (copy / "report.html").read_text().rstrip().endswith("</html>")


def test_a_scenario_with_its_own_profile_file_names_no_molecule_variable():
    assert report.scenario_info("jetson-arm64")["profile"] == "own profile.yml"
    assert report.scenario_info("l2-vlans")["profile"] == "vlans"
