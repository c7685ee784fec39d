# Copyright: n3x developers
# MIT License
"""Attributes shared by n3x modules that run on the host where their files are."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
"""
