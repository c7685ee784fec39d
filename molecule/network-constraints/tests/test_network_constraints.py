"""tc netem, tbf and htb on the cluster interface: measured latency, loss and throughput.

Runs on the first node against the second; every qdisc is removed again at the end.
"""

import math
import re

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import node_interfaces

PROBE_PORT = 5201
# netem's loss applies to our requests only, so the measured loss is the configured rate;
# with this many probes, 3 standard deviations of the binomial stay well inside 1-9 %.
LOSS_PROBES = 400
LOSS_RATE = 0.05


@pytest.fixture
def link(host, profile, node, lab_nodes):
    if node != lab_nodes[0]:
        pytest.skip("constraints are measured from the first node")
    peer = lab_nodes[1]
    interface = node_interfaces(profile, node)["cluster"]
    host.run(f"tc qdisc del dev {interface} root")
    yield interface, profile["ip_addresses"][peer]["cluster"], peer
    host.run(f"tc qdisc del dev {interface} root")


def tc(host, command):
    result = host.run(f"tc {command}")
    assert result.rc == 0, f"tc {command}: {result.stderr}"


def rtt_ms(host, address, count=20):
    result = host.run(f"ping -q -c {count} -i 0.1 -W 2 {address}")
    assert result.rc == 0, result.stdout
    average = re.search(r"= [\d.]+/([\d.]+)/", result.stdout)
    return float(average.group(1))


def loss_fraction(host, address, count):
    result = host.run(f"ping -q -c {count} -i 0.01 -W 1 {address}")
    found = re.search(r"(\d+) packets transmitted, (\d+) received", result.stdout)
    sent, received = int(found.group(1)), int(found.group(2))
    return (sent - received) / sent


def throughput_mbit(host, peer_host, address, megabytes=4):
    """Send MEGABYTES over TCP to a Python sink on the peer; return Mbit/s."""
    sink = (
        "import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
        f"s.bind(('0.0.0.0', {PROBE_PORT})); s.listen(1); c,_=s.accept()\n"
        "while c.recv(65536): pass"
    )
    peer_host.run(f'nohup timeout 120 python3 -c "{sink}" >/dev/null 2>&1 &')
    source = (
        f"import socket,time; s=socket.create_connection(('{address}', {PROBE_PORT}), timeout=5); b=b'x'*65536; t=time.monotonic()\n"
        f"for _ in range({megabytes * 16}): s.sendall(b)\n"
        "s.shutdown(socket.SHUT_WR); s.recv(1); print(time.monotonic()-t)"
    )
    result = host.run(f'sleep 0.5; timeout 120 python3 -c "{source}"')
    assert result.rc == 0, result.stderr
    return megabytes * 8 / float(result.stdout.strip())


def test_latency_rises_with_netem_delay(host, link, record_property):
    interface, address, _peer = link
    baseline = rtt_ms(host, address)
    tc(host, f"qdisc add dev {interface} root netem delay 50ms 10ms distribution normal")
    delayed = rtt_ms(host, address, count=30)
    print(f"netem delay 50ms 10ms: RTT {baseline:.1f} -> {delayed:.1f} ms")
    record_property("rtt_ms_baseline", round(baseline, 2))
    record_property("rtt_ms_netem_delay_50ms", round(delayed, 2))
    assert delayed - baseline >= 30, f"RTT {baseline:.1f} ms -> {delayed:.1f} ms with 50 ms netem delay"


def test_loss_matches_netem_rate(host, link, record_property):
    interface, address, _peer = link
    tc(host, f"qdisc add dev {interface} root netem loss {LOSS_RATE * 100:g}%")
    measured = loss_fraction(host, address, LOSS_PROBES)
    print(f"netem loss {LOSS_RATE:.0%}: measured {measured:.1%} over {LOSS_PROBES} probes")
    record_property("loss_percent_netem_5", round(measured * 100, 2))
    sigma = math.sqrt(LOSS_RATE * (1 - LOSS_RATE) / LOSS_PROBES)
    assert abs(measured - LOSS_RATE) <= 3 * sigma, f"loss {measured:.1%} over {LOSS_PROBES} probes, configured {LOSS_RATE:.0%}"


def test_tbf_bounds_throughput(host, link, host_of, record_property):
    interface, address, peer = link
    unshaped = throughput_mbit(host, host_of(peer), address)
    tc(host, f"qdisc add dev {interface} root tbf rate 10mbit burst 32kbit latency 400ms")
    shaped = throughput_mbit(host, host_of(peer), address)
    print(f"tbf 10mbit: {unshaped:.1f} -> {shaped:.1f} Mbit/s")
    record_property("mbit_s_unshaped", round(unshaped, 1))
    record_property("mbit_s_tbf_10mbit", round(shaped, 1))
    assert shaped <= 11, f"{shaped:.1f} Mbit/s through a 10mbit tbf (unshaped {unshaped:.1f})"
    assert shaped >= 5, f"{shaped:.1f} Mbit/s: the tbf starves the link"


def test_htb_with_netem_child(host, link, host_of, record_property):
    interface, address, peer = link
    baseline = rtt_ms(host, address)
    tc(host, f"qdisc add dev {interface} root handle 1: htb default 10")
    tc(host, f"class add dev {interface} parent 1: classid 1:10 htb rate 10mbit ceil 10mbit")
    tc(host, f"qdisc add dev {interface} parent 1:10 handle 10: netem delay 50ms")
    delayed = rtt_ms(host, address)
    shaped = throughput_mbit(host, host_of(peer), address, megabytes=2)
    print(f"htb 10mbit + netem 50ms: RTT {baseline:.1f} -> {delayed:.1f} ms, {shaped:.1f} Mbit/s")
    record_property("rtt_ms_htb_netem_50ms", round(delayed, 2))
    record_property("mbit_s_htb_10mbit", round(shaped, 1))
    assert delayed - baseline >= 40, f"RTT {baseline:.1f} -> {delayed:.1f} ms under htb+netem"
    assert shaped <= 11, f"{shaped:.1f} Mbit/s through a 10mbit htb class"


def test_latency_recovers_when_constraints_go(host, link, record_property):
    interface, address, _peer = link
    baseline = rtt_ms(host, address)
    tc(host, f"qdisc add dev {interface} root netem delay 100ms")
    assert rtt_ms(host, address, count=10) >= baseline + 80
    tc(host, f"qdisc del dev {interface} root")
    recovered = rtt_ms(host, address)
    print(f"after removing netem: RTT {recovered:.1f} ms (baseline {baseline:.1f})")
    record_property("rtt_ms_recovered", round(recovered, 2))
    assert recovered <= baseline + 10, f"RTT {recovered:.1f} ms after removing netem, baseline {baseline:.1f}"
