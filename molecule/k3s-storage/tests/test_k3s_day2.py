"""Day 2 (upgrade, partial reset, add node) on this scenario's cluster: k3s_day2.py."""

from k3s_day2 import *  # noqa: F403
