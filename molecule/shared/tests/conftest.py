"""Shared lab fixtures (see lab_fixtures.py)."""

from lab_fixtures import expected, host_of, lab_nodes, node, profile  # noqa: F401
