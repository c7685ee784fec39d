"""No input, however malformed, makes the loader raise anything but ProfileError."""

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.n3x.cluster.plugins.module_utils.n3x_k3s import k3s_config
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_networkd import networkd_units
from ansible_collections.n3x.cluster.plugins.module_utils.n3x_profile import (
    ROOT_KEYS,
    ProfileError,
    parse_profile_text,
    validate_profile,
)

from .test_profile_validation import BOND, DHCP, VLANS

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "eth1",
            "eth1.200",
            "bond0",
            "192.168.1.1",
            "10.42.0.0/16",
            "https://1.2.3.4:6443",
            "52:54:00:01:01:01",
            "active-backup",
            "cluster",
            "storage",
            "server-1",
        ]
    ),
)
keys = st.one_of(
    st.sampled_from([*ROOT_KEYS, "cluster", "storage", "trunk", "bond_members", "server-1", "mode", "primary", "miimon", "server"]),
    st.text(max_size=8),
    st.integers(-3, 3),
)
values = st.recursive(scalars, lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)), max_leaves=25)


def must_not_crash(call):
    try:
        return call()
    except ProfileError as exc:
        message = str(exc)
    assert message
    return None


def render_all(profile):
    for node in profile["ip_addresses"]:
        networkd_units(profile, node)
        k3s_config(profile, node, "server")
        k3s_config(profile, node, "agent")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_arbitrary_structures(data):
    profile = must_not_crash(lambda: validate_profile(data))
    if profile is not None:
        must_not_crash(lambda: render_all(profile))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    must_not_crash(lambda: parse_profile_text(text))


paths = {
    "vlans": VLANS,
    "bond": BOND,
    "dhcp": DHCP,
}


@st.composite
def mutated(draw):
    base = copy.deepcopy(paths[draw(st.sampled_from(sorted(paths)))])
    for _ in range(draw(st.integers(1, 3))):
        target = base
        while isinstance(target, dict) and target and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(target, key=str)))
            if not isinstance(target[key], dict):
                target[key] = draw(values)
                break
            target = target[key]
        else:
            if isinstance(target, dict):
                target[draw(keys)] = draw(values)
    return base


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_near_valid_profiles(data):
    profile = must_not_crash(lambda: validate_profile(data))
    if profile is not None:
        must_not_crash(lambda: render_all(profile))
